"""The docs' method pictures, made from real trained runs (never by hand): for each method, what ``blendseg predict
--show-bases`` draws on one validation image, written to docs/images/<method>_bases.png, and the same image's
drawn prediction to docs/images/<method>_example.png.

    python tools/docs_figures.py --runs runs/tracking --data runs/tracking/data/data.yaml

``--runs`` holds one run folder per method as ``benchmarks.accuracy`` writes them (``blendmask_tiny_seed0``,
``yolact_tiny_seed0``, ``meinst_tiny_seed0``); ``--data`` the data.yaml of their validation split.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import blendseg
from blendseg.data.coco import open_split
from blendseg.figures import show_bases

METHODS = {"blendmask": "blendmask_tiny", "yolact": "yolact_tiny", "meinst": "meinst_tiny"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("runs/tracking"))
    p.add_argument("--data", type=Path, default=Path("runs/tracking/data/data.yaml"))
    p.add_argument("--image", type=int, default=3, help="index of the validation image")
    p.add_argument("--conf", type=float, default=0.3, help="instances drawn in the --show-bases figure")
    p.add_argument("--example-conf", type=float, default=0.5, help="instances drawn in the example prediction")
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    a = p.parse_args()
    ds = open_split(a.data, "val")
    info = ds.images[a.image]
    image = ds.read_image(info)
    for method, preset in METHODS.items():
        model = blendseg.load(a.runs / f"{preset}_seed0" / "weights" / "last.pt", device="cpu")
        fig = show_bases(model.model, model.cfg, image, model.categories.thing_names, a.conf)
        fig.save(a.out / f"{method}_bases.png")
        result = model.predict(image.permute(1, 2, 0).numpy(), conf=a.example_conf)[0]
        result.save(a.out / f"{method}_example.png")
        print(f"{method}: {a.out / f'{method}_bases.png'}, {len(result)} instances on {info['file_name']}")


if __name__ == "__main__":
    main()
