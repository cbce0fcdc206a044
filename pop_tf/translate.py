"""`pop-tf translate`: the translator SavedModel's inference modes on a pair of images.

Works from the exported SavedModel only (docs/savedmodels.md), so it shows exactly what other apps get:
- A→B (style translation): A's content, the style encoded from B, B's domain
  (`translate(A, B, domain_b)`);
- B→A (content translation, paper 1's "B → A" row): B's content with the style encoded from A,
  under A's domain label as DMIT's `s2w_enc` passes it (`translate(B, A, domain_a)`);
- random styles: A→A and B→B with styles from the prior (`sample`, seeded).

`translation_grid` lays them out as the paper's 10-image row, after the two inputs: A | B | A→B |
B→A | four random A→A | four random B→B.
"""

import argparse
import json
import os
import warnings

import numpy as np

from pop_tf.errors import PopTfError, UsageError, report, reportable
from pop_tf.paths import check_apart

RANDOM_STYLES = 4  # per input, as the paper's row
# The inputs, then the paper's 10 outputs; "A→B" and "B→A" are the paper's names of its rows.
GRID_COLUMNS = ("A", "B", "A→B", "B→A",
                *(f"A→A rand {i + 1}" for i in range(RANDOM_STYLES)),
                *(f"B→B rand {i + 1}" for i in range(RANDOM_STYLES)))
MAX_FILE_BYTES = 50 * 1024 * 1024  # as ingest's default: a larger file is not a garment photo


def translation_grid(model, image_a, image_b, domain_a: str, domain_b: str, seed: int = 0) -> np.ndarray:
    """The inputs and the paper's 10-image row for one pair, uint8 [S, 12·S, 3] (`GRID_COLUMNS`).

    Args:
        model: a loaded translator SavedModel (`tf.saved_model.load`).
        image_a, image_b: uint8 [H, W, 3] of any size (fitted to S by the model).
        domain_a, domain_b: domain names of A and B, e.g. "unpopular/color", "popular/color".
        seed: the seed of the random styles.
    """
    import tensorflow as tf

    a, b = tf.constant(image_a[None], tf.uint8), tf.constant(image_b[None], tf.uint8)
    target_b, target_a = tf.constant([domain_b]), tf.constant([domain_a])
    style = model.translate(content=a, reference=b, target_domain=target_b)["images"][0]
    content = model.translate(content=b, reference=a, target_domain=target_a)["images"][0]
    seed_t, count = tf.constant(seed, tf.int64), tf.constant(RANDOM_STYLES, tf.int32)
    random_a = model.sample(content=a, target_domain=target_a, seed=seed_t, num_samples=count)["images"][0]
    random_b = model.sample(content=b, target_domain=target_b, seed=seed_t, num_samples=count)["images"][0]
    size = int(style.shape[0])
    fitted = [tf.image.resize(x, (size, size), antialias=True) for x in (image_a, image_b)]
    tiles = [tf.cast(tf.clip_by_value(tf.round(t), 0, 255), tf.uint8) for t in fitted]
    tiles += [style, content, *tf.unstack(random_a), *tf.unstack(random_b)]
    return np.concatenate([np.asarray(t) for t in tiles], axis=1)


def read_image(path: str, flag: str, max_pixels: int) -> np.ndarray:
    """uint8 [H, W, 3] of the image file `path`, read and decoded as ingest does: only a regular
    file (a FIFO or /dev/zero named like an image would hang the command), at most
    `MAX_FILE_BYTES`, its size checked from the header against `max_pixels` (the model's) before
    any pixel is decoded."""
    from PIL import Image

    from pop_tf.beam import images
    from pop_tf.beam.reasons import Rejected

    try:
        data = images.read_untrusted_file(path, MAX_FILE_BYTES)
    except images.FileRefused as e:
        raise PopTfError(f"{flag} {path} {e.message}") from None
    try:
        with warnings.catch_warnings():
            # decode_image checks the header against max_pixels; PIL's warning would be a second, vaguer line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = images.decode_image(data, max_pixels=max_pixels, max_file_bytes=MAX_FILE_BYTES, min_side=1,
                                        max_aspect=float("inf"),
                                        max_pixels_key="max_pixels in the model's pop_tf.json")
    except Rejected as e:
        raise PopTfError(f"{flag} {path}: {e.message}") from None
    return np.asarray(image)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pop-tf translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a translator SavedModel folder (saved_models/translator/<v>)")
    parser.add_argument("--a", required=True, dest="image_a", help="image A (e.g. an unpopular garment)")
    parser.add_argument("--b", required=True, dest="image_b", help="image B (e.g. a popular garment)")
    parser.add_argument("--domain-a", default="unpopular/color", help="A's domain (default unpopular/color)")
    parser.add_argument("--domain-b", default="popular/color", help="B's domain (default popular/color)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random styles")
    parser.add_argument("--output", required=True, help="PNG file for the grid: A, B and the paper's 10-image row")
    args = parser.parse_args(argv)
    import tensorflow as tf
    from PIL import Image

    from pop_tf import serving

    try:
        check_apart({"--output": args.output}, {"--a": args.image_a, "--b": args.image_b, "--model": args.model})
        card = serving.read_model_card(args.model, expected_kind="translator")
        # A model exported before serving limits has none in its card: the export default then.
        max_pixels = serving.resolve_limits(max_pixels=card.get("limits", {}).get("max_pixels"))["max_pixels"]
        image_a = read_image(args.image_a, "--a", max_pixels)
        image_b = read_image(args.image_b, "--b", max_pixels)
        model = tf.saved_model.load(args.model)
        names = [n.decode() for n in model.domains()["names"].numpy()]
        for flag, name in (("--domain-a", args.domain_a), ("--domain-b", args.domain_b)):
            if name not in names:
                raise UsageError(f"{flag} {name!r} is not a domain of this model; use one of {', '.join(names)}")
        grid = translation_grid(model, image_a, image_b, args.domain_a, args.domain_b, args.seed)
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        Image.fromarray(grid).save(args.output)
    except Exception as e:  # a full disk may come wrapped by TensorFlow or Beam
        if not reportable(e):
            raise
        return report("pop-tf translate", e)
    print(json.dumps({"grid": args.output, "columns": list(GRID_COLUMNS)}, indent=2, ensure_ascii=False))
    return 0
