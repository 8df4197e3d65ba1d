"""`twinlm encode` and `twinlm search` on dense and sparse models built from the micro encoder."""

from __future__ import annotations

import json

import pytest

from twinlm.cli import main

DOCS = ["Anna Berg was born in Oslo.", "Tom Hale works for Northwind.", "Lea Stone studied physics.",
        "Max Roth is a nurse in Lyon."]


@pytest.fixture(scope="module")
def models(micro_run, tmp_path_factory):
    """Untrained dense and SPLADE models saved as sentence-transformers folders (search needs no training)."""
    from twinlm.finetune import dense, sparse
    from twinlm.finetune.base import inspect_base
    from twinlm.finetune.recipe import load_finetune_recipe

    root = tmp_path_factory.mktemp("retrievers")
    base = inspect_base(str(micro_run / "encoder"))
    out = {}
    recipe = load_finetune_recipe(None, "dense", [], {"base_model": base.name})
    dense.build_model(base, recipe, "auto").save_pretrained(str(root / "dense"))
    recipe = load_finetune_recipe(None, "sparse", [], {"base_model": base.name})
    sparse.build_model(base, recipe).save_pretrained(str(root / "sparse"))
    for kind in ("dense", "sparse"):
        out[kind] = root / kind
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)))
    out["corpus"] = corpus
    return out


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_encode_writes_vectors_that_match_the_model(models, kind, tmp_path, capsys):
    from safetensors.torch import load_file

    from twinlm.finetune.search import load_model

    out = tmp_path / "vectors"
    assert main(["encode", str(models[kind]), str(models["corpus"]), "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == kind and meta["count"] == len(DOCS)
    assert json.loads((out / "ids.json").read_text()) == [f"d{i}" for i in range(len(DOCS))]
    tensors = load_file(str(out / "vectors.safetensors"))
    expected = load_model(str(models[kind])).encode_document(DOCS, convert_to_tensor=True)
    if kind == "sparse":
        import torch

        got = torch.sparse_coo_tensor(tensors["indices"], tensors["values"], tuple(tensors["shape"].tolist()))
        assert torch.allclose(got.to_dense(), expected.to_dense(), atol=1e-5)
        assert meta["dimensions"] >= 512
    else:
        assert torch_close(tensors["embeddings"], expected)
    # Encoding again without --overwrite must not touch the result.
    assert main(["encode", str(models[kind]), str(models["corpus"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def torch_close(a, b) -> bool:
    import torch

    return bool(torch.allclose(a, b.cpu(), atol=1e-5))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_search_prints_top_k_in_score_order(models, kind, capsys):
    query = DOCS[2]
    assert main(["search", str(models[kind]), "--corpus", str(models["corpus"]), "--query", query, "-k", "3"]) == 0
    lines = [line.split(None, 3) for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(lines) == 3 and [int(line[0]) for line in lines] == [1, 2, 3]
    scores = [float(line[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    if kind == "dense":  # the query is a document verbatim: cosine 1 puts it first
        assert lines[0][2] == "d2"


def test_search_bad_input_is_one_line(models, micro_run, tmp_path, capsys):
    assert main(["search", str(micro_run / "encoder"), "--corpus", str(models["corpus"]), "--query", "x"]) == 2
    assert "not a sentence-transformers model" in capsys.readouterr().err
    assert main(["search", str(models["dense"]), "--corpus", str(tmp_path / "none.jsonl"), "--query", "x"]) == 2
    assert "no corpus file" in capsys.readouterr().err
    assert main(["encode", str(models["dense"]), str(models["corpus"]), "--text-column", "body",
                 "--out", str(tmp_path / "v")]) == 2
    assert "body" in capsys.readouterr().err
