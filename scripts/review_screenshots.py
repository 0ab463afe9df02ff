"""Screenshots of rendered report sets for review (issues 16, 19): the index, one market report and one partner
packet, and the employee reports' index and the alliance's report, at desktop (1280 px) and phone (390 px) width,
in headless Chromium (``tests/headless.py``); each set only when its folder is given.

    python scripts/review_screenshots.py --reports reports --packets packets --out benchmarks/results/screenshots
    python scripts/review_screenshots.py --employees employees --out benchmarks/results/screenshots

Each PNG is the first ``--height`` CSS pixels of the page (what a reader sees first, and a little more),
saved as an 8-bit palette image to stay small.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from headless import Browser  # noqa: E402

VIEWPORTS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, help="a market report set (carequal report)")
    parser.add_argument("--packets", type=Path, help="a packet set (carequal report --by partner)")
    parser.add_argument("--employees", type=Path, help="an employee report set (carequal report --by sponsor)")
    parser.add_argument("--market", default="Riverton")
    parser.add_argument("--partner", default="A001001")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "screenshots")
    parser.add_argument("--height", type=int, default=2400, help="CSS pixels of the page from the top")
    args = parser.parse_args(argv)
    from PIL import Image

    pages = {}
    if args.reports:
        pages.update(index=args.reports / "index.html", market_report=args.reports / f"{args.market}.html")
    if args.packets:
        pages.update(packet_index=args.packets / "index.html", packet=args.packets / f"{args.partner}.html")
    if args.employees:
        pages.update(employee_index=args.employees / "index.html",
                     employee_report=args.employees / "All_sponsors.html")
    if not pages:
        parser.error("give at least one of --reports, --packets, --employees")
    browser = Browser()
    try:
        for name, page in pages.items():
            for device, (width, height, mobile) in VIEWPORTS.items():
                browser.open(page, width=width, height=height, mobile=mobile)
                tall = min(args.height if device == "desktop" else int(args.height * 1.6),
                           browser.evaluate("document.documentElement.scrollHeight"))
                png = browser.screenshot(args.out / f"{name}_{device}.png", width=width, height=tall)
                Image.open(png).convert("RGB").quantize(colors=128).save(png, optimize=True)
                print(f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}: {png.stat().st_size // 1024} KB")
    finally:
        browser.close()


if __name__ == "__main__":
    main()
