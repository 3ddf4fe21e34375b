"""``blendseg data convert``: a data.yaml's dataset rewritten in the other layout (COCO JSON <-> ultralytics' YOLO
labels). It sits above both readers (:mod:`.coco` and :mod:`.yolo`), which do not import each other's writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .sources import load_data, read_split, report
from .yolo import coco_to_yolo_lines, label_path


def convert_dataset(data_yaml: str | os.PathLike, to: str, out: str | os.PathLike) -> tuple[Path, list[str]]:
    """Write ``data_yaml``'s dataset in the other layout under ``out`` (``to``: "coco" or "yolo") with its own
    data.yaml; the images are not copied (COCO: the JSON names them where they are; YOLO: ``images/<split>`` is a
    link to the split's folder). Returns (the new data.yaml, one line per split saying what was written)."""
    spec, out = load_data(data_yaml), Path(out)
    if to not in ("coco", "yolo"):
        raise ValueError(f"--to must be coco or yolo, got {to!r}")
    out.mkdir(parents=True, exist_ok=True)
    splits, lines, names = {}, [], spec.names
    for name in spec.splits:
        data, images_dir, probs = read_split(spec, name)
        report(probs)
        if to == "coco":
            ann = out / "annotations" / f"instances_{name}.json"
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(json.dumps(data))
            splits[name] = {"images": str(Path(images_dir).resolve()), "annotations": str(ann.relative_to(out))}
            lines.append(f"{name}: {len(data['images'])} images, {len(data['annotations'])} instances -> {ann}")
            names = names or [c.get("name", str(c["id"])) for c in sorted(data["categories"], key=lambda c: c["id"])]
            continue
        cat_ids = sorted(c["id"] for c in data["categories"])
        by_id = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
        names = names or [by_id[c] for c in cat_ids]
        link = out / "images" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(Path(images_dir).resolve(), target_is_directory=True)
        anns: dict[int, list[dict]] = {}
        for a in data["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        index = {c: i for i, c in enumerate(cat_ids)}
        written = left_out = 0
        for image in data["images"]:
            label_lines, dropped = coco_to_yolo_lines(anns.get(image["id"], []), image, index)
            left_out += dropped
            if label_lines:
                target = label_path(link / image["file_name"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(label_lines) + "\n")
                written += len(label_lines)
        splits[name] = f"images/{name}"
        note = f" ({left_out} crowd or empty annotations left out: YOLO has no crowd)" if left_out else ""
        lines.append(f"{name}: {len(data['images'])} images, {written} instances -> {out / 'labels' / name}{note}")
    doc = {"path": str(out.resolve()), **splits, "names": dict(enumerate(names or []))}
    (out / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out / "data.yaml", lines


def convert_from(
    source: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    images: str | None = None,
    attribute: str | None = None,
) -> tuple[Path, list[str]]:
    """A LabelMe folder or a VIA JSON (``fmt``: "labelme" or "via"; :mod:`.labelme_via`) written as a COCO dataset
    in CVAT's layout under ``out``: ``annotations/instances_default.json`` (checked: the fixes training makes are
    made and said) and ``images``, a link to the images' folder. ``blendseg train PRESET OUT`` reads it (a val
    split made). Returns (``out``, what was written and fixed)."""
    from .check import check_coco
    from .labelme_via import read_labelme, read_via

    if fmt == "labelme":
        data, root, probs = read_labelme(source)
    elif fmt == "via":
        data, root, probs = read_via(source, images, attribute)
    else:
        raise ValueError(f"--from must be labelme or via, got {fmt!r}")
    data, found = check_coco(data, str(source), root, decode=False)
    report(probs + found)
    out = Path(out)
    ann = out / "annotations" / "instances_default.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    link = out / "images"
    if not link.exists():
        link.symlink_to(Path(root).resolve(), target_is_directory=True)
    names = ", ".join(c["name"] for c in data["categories"])
    return out, [f"{len(data['images'])} images, {len(data['annotations'])} instances of {names} -> {ann}"]
