"""`pop-tf ablate`: one pix2pix run per diversity method on the same data, evaluated together."""

import json

from pop_tf import pipeline
from pop_tf import ablation
from tests.conftest import TINY, tiny_config


def _args(workdir, *sets):
    args = ["--workdir", str(workdir)]
    for item in (*TINY, "train_translator.pix2pix_image_d_blocks=2", "train_translator.batch_size=4", *sets):
        args += ["--set", item]
    return args


def test_ablate_trains_each_variant_and_evaluates_them_together(tmp_path, capsys):
    workdir = tmp_path / "w"
    pipeline.run(tiny_config(), str(workdir), until="cluster")
    capsys.readouterr()
    assert ablation.main(_args(workdir, "ablation.variants=none,clusters")) == 0
    out = capsys.readouterr().out
    paths = json.loads(out[out.rindex("\n{") + 1:])  # the paths close the output, after Keras' progress
    for variant in ("none", "clusters"):
        trained = json.loads((workdir / "ablation" / f"pix2pix_{variant}" / "config.json").read_text())
        # everything but the method is shared: the tiny networks of the train_translator section
        assert (trained["model"], trained["diversity"], trained["base_filters"]) == ("pix2pix", variant, 8)
        assert (workdir / "logs" / f"pix2pix_{variant}").is_dir()  # side by side in TensorBoard
    assert paths["metrics"] == str(workdir / "ablation" / "evaluate" / "metrics.json")
    metrics = json.loads((workdir / "ablation" / "evaluate" / "metrics.json").read_text())
    rows = metrics["pix2pix"]["variants"]
    assert [row["diversity"] for row in rows] == ["none", "clusters"]
    assert all(row["ndb"] >= 0 and row["jsd"] >= 0 for row in rows)
    assert "translator" not in metrics  # this work folder has no DMIT translator
    assert "Diversity ablation" in (workdir / "ablation" / "evaluate" / "report.html").read_text()


def test_an_unknown_variant_is_named_before_anything_runs(tmp_path, capsys):
    assert ablation.main(["--workdir", str(tmp_path), "--set", "ablation.variants=none,msgan"]) == 2
    assert "'ablation.variants': 'msgan' is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "ablation").exists()
