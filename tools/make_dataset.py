#!/usr/bin/env python3
"""Build the training photo set from freely licensed Debian wallpaper packages.

Any fresh Debian/Ubuntu machine can rebuild it, so no data is committed to the repository. The photographs
(about 43 images, ~224 MP before downscaling) come from

- ``mate-backgrounds``: ``/usr/share/backgrounds/mate/nature/*.jpg`` (GPL-2+);
- ``lomiri-wallpapers-16.04``: the 14 photographic ``*_by_*.jpg`` (not the ``umang`` illustration; CC-BY,
  CC-BY-SA, CC0);
- ``lomiri-wallpapers-20.04``: ``Kleiber_by_Lukas_Baubkus.jpg`` (CC-BY-SA-3.0);
- ``plasma-workspace-wallpapers``: the 2560x1600 size of the 11 photographic wallpapers (GPL-2+);
- ``palapeli-data``: ``/usr/share/palapeli/collection/*.jpg`` (GPL-2+).

Most sources are JPEGs, some heavily compressed, so each image is downscaled by ``--factor`` (2 by default;
antialiased Lanczos, as is usual in the learned-compression literature: it averages out blocking and noise),
and written losslessly as PNG (or lossless WebP, ``--format webp``). Four photos, one per source family, are held out for validation (``val/``),
the rest go to ``train/``. ``manifest.json`` lists every file with its source package and path, original and
output size, sha256 of source and output, and the licence read from ``/usr/share/doc/<package>/copyright``.
Kodak is never used here: it is the evaluation set.

    python tools/make_dataset.py [--install] [--out data/photos] [--factor 2]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import glob
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

PACKAGES = [
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "palapeli-data",
]

LOMIRI_16 = [
    "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "analogpattern_by_Peter_Nerlich",
    "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
    "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
    "sunset_by_Aitzol_Berasategi",
]  # fmt: skip
PLASMA = [
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
    "OneStandsOut", "Path", "summer_1am",
]  # fmt: skip

#: Held out for validation: one photo per source family, all at least 256 px on the short side after /2.
VALIDATION = {"mate__Storm", "lomiri16__sunset_by_Aitzol_Berasategi", "plasma__Path", "palapeli__citrus-fruits"}


def sources() -> list[dict]:
    """Every selected photo: output stem, package and installed path (existing or not)."""
    out = []
    for p in sorted(glob.glob("/usr/share/backgrounds/mate/nature/*.jpg")):
        out.append({"stem": "mate__" + Path(p).stem, "package": "mate-backgrounds", "path": p})
    for name in LOMIRI_16:
        out.append({"stem": "lomiri16__" + name, "package": "lomiri-wallpapers-16.04",
                    "path": f"/usr/share/backgrounds/{name}.jpg"})  # fmt: skip
    out.append({"stem": "lomiri20__Kleiber_by_Lukas_Baubkus", "package": "lomiri-wallpapers-20.04",
                "path": "/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"})  # fmt: skip
    for name in PLASMA:
        out.append({"stem": "plasma__" + name, "package": "plasma-workspace-wallpapers",
                    "path": f"/usr/share/wallpapers/{name}/contents/images/2560x1600.jpg"})  # fmt: skip
    for p in sorted(glob.glob("/usr/share/palapeli/collection/*.jpg")):
        out.append({"stem": "palapeli__" + Path(p).stem, "package": "palapeli-data", "path": p})
    return out


def parse_copyright(package: str) -> list[tuple[list[str], str, str]]:
    """The ``Files:`` paragraphs of a machine-readable (DEP-5) copyright file: (patterns, copyright, licence)."""
    path = Path(f"/usr/share/doc/{package}/copyright")
    if not path.is_file():
        return []
    paragraphs, cur, key = [], {}, None
    for line in path.read_text(errors="replace").splitlines() + [""]:
        if not line.strip():
            if "files" in cur:
                paragraphs.append((cur["files"].split(), cur.get("copyright", "").strip(), cur.get("license", "")))
            cur, key = {}, None
        elif line[0] in " \t" and key:
            if key != "license":  # a licence's continuation lines are its full text
                cur[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    return paragraphs


def licence_of(package: str, installed: str) -> tuple[str, str]:
    """(licence, copyright) of an installed file: the last matching ``Files:`` paragraph wins (DEP-5)."""
    found = ("unknown", "")
    for patterns, copyright_, licence in parse_copyright(package):
        for pat in patterns:
            if pat.startswith("debian/"):  # packaging files, never the installed data
                continue
            # lomiri lists "16.04/<name>.jpg" but installs to /usr/share/backgrounds/<name>.jpg: match exact names
            base_match = "/" in pat and not any(c in Path(pat).name for c in "*?[") and fnmatch.fnmatch(Path(installed).name, Path(pat).name)
            if pat == "*" or fnmatch.fnmatch(installed, "*/" + pat) or base_match:
                found = (licence, copyright_)
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="store_true", help="apt-get install the source packages first (root)")
    ap.add_argument("--out", default="data/photos", help="output folder (default data/photos, gitignored)")
    ap.add_argument("--factor", type=float, default=2.0, help="downscale factor, at least 2 (default 2)")
    ap.add_argument(
        "--format",
        choices=("png", "webp"),
        default="png",
        help="lossless output format; webp is ~30%% smaller (~47 MB instead of 68 MB at --factor 2, 25 MB at "
        "--factor 3, which is what fits beside the working tree in the device tool's 64 MiB) but slower to write",
    )
    args = ap.parse_args(argv)
    if args.factor < 2:
        ap.error("--factor must be at least 2 (the sources are JPEGs)")
    if args.install:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)

    srcs = sources()
    missing = [s["path"] for s in srcs if not Path(s["path"]).is_file()]
    if missing:
        print(f"{len(missing)} source photos are missing (install with --install):", *missing[:8], sep="\n  ")
        return 1
    out = Path(args.out)
    for sub in ("train", "val"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for s in srcs:
        src = Path(s["path"])
        with Image.open(src) as im:
            orig = im.size
            rgb = im.convert("RGB")
        size = (max(1, round(orig[0] / args.factor)), max(1, round(orig[1] / args.factor)))
        small = rgb.resize(size, Image.Resampling.LANCZOS)
        split = "val" if s["stem"] in VALIDATION else "train"
        dst = out / split / (s["stem"] + "." + args.format)
        tmp = dst.with_name(dst.name + ".tmp")
        if args.format == "png":
            small.save(tmp, format="PNG", compress_level=4)
        else:
            small.save(tmp, format="WEBP", lossless=True, quality=100, method=4, exact=True)
        os.replace(tmp, dst)
        licence, copyright_ = licence_of(s["package"], str(src))
        entries.append({
            "file": f"{split}/{dst.name}", "split": split, "package": s["package"], "source": str(src),
            "source_sha256": sha256(src), "source_size": list(orig), "size": list(size),
            "sha256": sha256(dst), "licence": licence, "copyright": copyright_,
        })  # fmt: skip
        print(f"{split:5s} {dst.name:48s} {orig[0]}x{orig[1]} -> {size[0]}x{size[1]}  {licence}", flush=True)

    versions = {}
    for pkg in PACKAGES:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        versions[pkg] = r.stdout.strip() or None
    mp = lambda split: sum(e["size"][0] * e["size"][1] for e in entries if e["split"] == split) / 1e6  # noqa: E731
    licences: dict[str, int] = {}
    for e in entries:
        licences[e["licence"]] = licences.get(e["licence"], 0) + 1
    manifest = {
        "description": "Photographs from Debian wallpaper packages, downscaled; see tools/make_dataset.py",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "factor": args.factor,
        "resample": "PIL Lanczos (antialiased)",
        "packages": versions,
        "counts": {"train": sum(e["split"] == "train" for e in entries), "val": sum(e["split"] == "val" for e in entries)},
        "megapixels": {"train": round(mp("train"), 2), "val": round(mp("val"), 2),
                       "source": round(sum(e["source_size"][0] * e["source_size"][1] for e in entries) / 1e6, 2)},
        "licences": licences,
        "files": entries,
    }  # fmt: skip
    text = json.dumps(manifest, indent=1)
    (out / "manifest.json.tmp").write_text(text)
    os.replace(out / "manifest.json.tmp", out / "manifest.json")
    print(f"wrote {len(entries)} images to {out} ({manifest['counts']}, {manifest['megapixels']} MP), "
          f"manifest sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
