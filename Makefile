# Convenience wrappers: every target goes through tasks.py, which needs only Python 3.11+.
PYTHON ?= python3

.PHONY: report test lab packets
report:
	$(PYTHON) tasks.py report
test:
	$(PYTHON) tasks.py test
lab:
	$(PYTHON) tasks.py lab
packets:
	$(PYTHON) tasks.py packets
