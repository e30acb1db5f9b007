"""Long-term feature banks: bank format, sampling rule, FBO operators, FBOHead and LFBInferHead."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from actionkit.cli import convert_lfb as CL
from actionkit.data import feature_bank as FB
from actionkit.data import feature_bank_writer as FBW
from actionkit.models import fbo_head as FBO
from actionkit.models import lfb_infer_head as LIH
from actionkit.registry import MODELS

WINDOW, K = 60, 5


# ------------------------------------------------------------------------------------------------ helpers
def _random_bank(seed: int = 0, channels: int = 8, dtype=torch.float16, videos=("vid_a", "vid_b", "v,c")):
    g = torch.Generator().manual_seed(seed)
    bank = {}
    for v in videos:
        secs = sorted(set(torch.randint(880, 1000, (70,), generator=g).tolist()))
        per = {}
        for s in secs:
            n = int(torch.randint(1, 9, (1,), generator=g))
            per[s] = [torch.randn(channels, generator=g).to(dtype) for _ in range(n)]
        bank[v] = per
    return bank


def _spec_rule(video_features: dict, t: int, channels: int, choose) -> np.ndarray:
    """The §4.11 loop over MMAction2's dict; ``choose(n, m)`` makes the random choice."""
    lt = np.zeros((WINDOW * K, channels), np.float32)
    start = t - WINDOW // 2
    for idx, sec in enumerate(range(start, start + WINDOW)):
        if sec in video_features:
            n = len(video_features[sec])
            m = min(n, K)
            for k, j in enumerate(choose(n, m)):
                lt[idx * K + k] = video_features[sec][j].float().numpy()
    return lt


def _key_chooser(rng: np.random.Generator, video_features: dict, t: int):
    """The same random choices as FeatureBank: one uniform per stored row of the window (row order),
    rows of a second ranked by their draw."""
    start = t - WINDOW // 2
    secs = [s for s in range(start, start + WINDOW) if s in video_features]
    total = sum(len(video_features[s]) for s in secs)
    u = rng.random(total)
    draws, pos = {}, 0
    for s in secs:
        n = len(video_features[s])
        draws[s] = u[pos:pos + n]
        pos += n
    it = iter(secs)

    def choose(n, m):
        s = next(it)
        assert len(draws[s]) == n
        return np.lexsort((draws[s],))[:m]
    return choose


@pytest.fixture
def small_bank(tmp_path):
    bank = _random_bank()
    pkl = tmp_path / "lfb_train.pkl"
    torch.save(bank, pkl)
    out = FBW.convert_lfb([pkl], tmp_path / "lfb_train")
    return bank, out


# ------------------------------------------------------------------------------------------------ format
def test_convert_roundtrip_and_files(small_bank):
    bank, out = small_bank
    assert sorted(p.name for p in out.iterdir()) == sorted(FB._FILES)
    meta = json.loads((out / "meta.json").read_text())
    n = sum(len(x) for per in bank.values() for x in per.values())
    assert meta["num_features"] == n and meta["channels"] == 8 and meta["dtype"] == "float16"
    fb = FB.FeatureBank.open(out)
    assert isinstance(fb.parts[0].features, np.memmap)
    assert fb.video_ids == sorted(bank) and len(fb) == 3 and "vid_a" in fb
    back = fb.to_dict()
    for v, per in bank.items():
        assert sorted(back[v]) == sorted(per)
        for s, feats in per.items():
            assert len(back[v][s]) == len(feats)
            for a, b in zip(back[v][s], feats):
                assert a.dtype == torch.float16 and torch.equal(a, b)
            assert np.array_equal(fb.features_at(v, s), torch.stack(feats).numpy())
    assert fb.features_at("vid_a", 5).shape == (0, 8)


def test_sampling_matches_spec_rule(small_bank):
    bank, out = small_bank
    fb = FB.FeatureBank.open(out, lfb_channels=8)
    keys = [("vid_a", 902), ("vid_b", 950), ("vid_a", 902), ("v,c", 1010), ("vid_b", 860)]
    got = fb.sample_batch(keys, rng=np.random.default_rng(123))
    assert got.shape == (5, 300, 8) and got.dtype == np.float32
    ref_rng = np.random.default_rng(123)   # the batch draws consecutively, RoI after RoI
    for r, (v, t) in enumerate(keys):
        ref = _spec_rule(bank[v], t, 8, _key_chooser(ref_rng, bank[v], t))
        np.testing.assert_array_equal(got[r], ref)
        # zero padding: exactly sum(min(n, K)) non-zero rows
        n_rows = sum(min(len(bank[v][s]), K) for s in range(t - 30, t + 30) if s in bank[v])
        assert int((np.abs(got[r]).sum(1) > 0).sum()) == n_rows
    # the scalar API gives the same as a one-RoI batch
    a = fb.sample("vid_a", 902, rng=np.random.default_rng(7))
    b = fb.sample_batch([("vid_a", 902)], rng=np.random.default_rng(7))[0]
    np.testing.assert_array_equal(a, b)
    assert fb.sample_long_term_features("vid_a", 902).dtype == torch.float32
    assert fb["vid_a,0902"].shape == (300, 8)
    with pytest.raises(KeyError, match="not in the feature bank"):
        fb.sample("nope", 902)


def test_sampling_is_uniform_without_replacement(tmp_path):
    g = torch.Generator().manual_seed(1)
    feats = [torch.full((4,), float(j + 1)) for j in range(8)]
    bank = {"v": {100: feats, 101: [torch.randn(4, generator=g)]}}
    out = FBW.write_feature_bank(tmp_path / "b", bank)
    fb = FB.FeatureBank.open(out)
    rng = np.random.default_rng(0)
    lt = fb.sample_batch([("v", 100)] * 2000, rng=rng)
    sec_slots = lt[:, 30 * K:31 * K, 0]                  # second 100 is window index 30
    assert np.all(sec_slots > 0)                          # min(8, 5) = 5 slots filled
    assert all(len(set(row.tolist())) == K for row in sec_slots)   # no repeats
    freq = np.bincount(sec_slots.astype(int).ravel(), minlength=9)[1:] / 2000
    np.testing.assert_allclose(freq, 5 / 8, atol=0.05)   # each row chosen with probability 5/8
    first = np.bincount(sec_slots[:, 0].astype(int), minlength=9)[1:] / 2000
    np.testing.assert_allclose(first, 1 / 8, atol=0.04)  # random order inside the slots
    assert np.array_equal(lt[:, 31 * K, :], np.broadcast_to(bank["v"][101][0].numpy(), (2000, 4)))


def test_deterministic_mode(small_bank):
    _, out = small_bank
    fb = FB.FeatureBank.open(out, deterministic=True)
    keys = [("vid_a", 902), ("vid_a", 902), ("vid_b", 950)]
    a = fb.sample_batch(keys, [0, 1, 0])
    b = FB.FeatureBank.open(out).sample_batch(keys, [0, 1, 0], deterministic=True)
    np.testing.assert_array_equal(a, b)                    # reproducible across opens
    np.testing.assert_array_equal(a[0], fb.sample("vid_a", 902, 0))
    assert not np.array_equal(a[0], a[1])                  # roi index enters the seed
    r1 = fb.sample_batch(keys, deterministic=False)
    r2 = fb.sample_batch(keys, deterministic=False)
    assert not np.array_equal(r1, r2)                      # random is random
    assert FB.stable_seed("vid_a", 902, 0) == FB.stable_seed("vid_a", 902, 0) != FB.stable_seed("vid_a", 903, 0)


def test_multiple_modes_merge_per_video(tmp_path):
    a = {"x": {10: [torch.ones(4)]}, "y": {10: [torch.ones(4)]}}
    b = {"y": {20: [torch.full((4,), 2.0)]}}
    FBW.write_feature_bank(tmp_path / "lfb_train", a)
    FBW.write_feature_bank(tmp_path / "lfb_val", b)
    fb = FB.open_lfb(tmp_path, lfb_channels=4, dataset_modes=("train", "val"), device="cpu")
    assert fb.video_ids == ["x", "y"]
    assert fb.seconds("y").tolist() == [20]                # dict.update: the later mode's video wins
    fb1 = FB.open_lfb(tmp_path, lfb_channels=4, dataset_modes="train")
    assert fb1.seconds("y").tolist() == [10]


# ------------------------------------------------------------------------------------------------ validation
def _expect_error(path, match, **kw):
    with pytest.raises(FB.FeatureBankError, match=match):
        FB.FeatureBank.open(path, **kw)


def test_validation_refuses_bad_banks(small_bank, tmp_path):
    _, out = small_bank
    import shutil

    def fresh(name):
        d = tmp_path / name
        shutil.copytree(out, d)
        return d

    _expect_error(out, r"meta.json: the bank has 8 channels but lfb_channels=2048", lfb_channels=2048)
    d = fresh("trunc")
    with open(d / "features.npy", "r+b") as f:
        f.truncate(os.path.getsize(d / "features.npy") - 10)
    _expect_error(d, r"trunc/features.npy")
    d = fresh("extra")
    with open(d / "features.npy", "ab") as f:
        f.write(b"\0" * 16)
    _expect_error(d, r"extra/features.npy: file size")
    d = fresh("meta_shape")
    meta = json.loads((d / "meta.json").read_text())
    meta["channels"] = 9
    (d / "meta.json").write_text(json.dumps(meta))
    _expect_error(d, r"meta_shape/features.npy: shape")
    d = fresh("meta_dtype")
    meta["channels"], meta["dtype"] = 8, "float32"
    (d / "meta.json").write_text(json.dumps(meta))
    _expect_error(d, r"meta_dtype/features.npy: dtype")
    d = fresh("offsets")
    so = np.load(d / "second_offsets.npy")
    so[-1] += 5
    np.save(d / "second_offsets.npy", so)
    _expect_error(d, r"offsets/second_offsets.npy: offsets out of bounds")
    d = fresh("vo")
    np.save(d / "video_offsets.npy", np.load(d / "video_offsets.npy").astype(np.int32))
    _expect_error(d, r"vo/video_offsets.npy: expected int64")
    d = fresh("secs")
    s = np.load(d / "seconds.npy")
    s[1] = s[0]
    np.save(d / "seconds.npy", s)
    _expect_error(d, r"secs/seconds.npy: seconds must be strictly increasing")
    d = fresh("ids")
    (d / "video_ids.json").write_text('["a"]')
    _expect_error(d, r"ids/video_ids.json")
    d = fresh("nometa")
    (d / "meta.json").unlink()
    _expect_error(d, r"nometa/meta.json: missing")
    d = fresh("garbage")
    (d / "meta.json").write_text("{not json")
    _expect_error(d, r"garbage/meta.json: unreadable")
    _expect_error(tmp_path / "absent", "no such bank directory")


def test_interrupted_write_leaves_no_bank(tmp_path, monkeypatch):
    bank = _random_bank(channels=4)
    target = tmp_path / "lfb_train"

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FBW, "_write_index", boom)
    with pytest.raises(KeyboardInterrupt):
        FBW.write_feature_bank(target, bank)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    FBW.write_feature_bank(target, bank)
    before = FB.FeatureBank.open(target).to_dict()
    monkeypatch.setattr(FBW, "_write_index", boom)
    with pytest.raises(KeyboardInterrupt):
        FBW.write_feature_bank(target, _random_bank(seed=5, channels=4))
    after = FB.FeatureBank.open(target).to_dict()           # the old bank is untouched
    assert all(torch.equal(x, y) for v in before for s in before[v] for x, y in zip(before[v][s], after[v][s]))
    assert [p.name for p in tmp_path.iterdir()] == ["lfb_train"]
    # a half-written directory (no meta.json) is never accepted
    half = tmp_path / "half"
    half.mkdir()
    np.save(half / "features.npy", np.zeros((2, 4), np.float16))
    _expect_error(half, "meta.json: missing")
    with pytest.raises(FileExistsError):
        FBW.write_feature_bank(target, bank, overwrite=False)


def test_open_is_fast_and_lazy(tmp_path):
    n, c = 20000, 256
    feats = np.random.default_rng(0).standard_normal((n, c)).astype(np.float16)
    per = {"vid": {1000 + i // 10: feats[i - i % 10:i - i % 10 + 10] for i in range(0, n, 10)}}
    FBW.write_feature_bank(tmp_path / "b", per)
    t0 = time.perf_counter()
    fb = FB.FeatureBank.open(tmp_path / "b")
    assert time.perf_counter() - t0 < 0.5
    assert fb.num_features == n and fb.num_seconds == n // 10
    np.testing.assert_array_equal(fb.features_at("vid", 1005), feats[50:60])


def test_write_from_arrays_and_pickling(small_bank, tmp_path):
    import copy
    import pickle
    _, out = small_bank
    fb = FB.FeatureBank.open(out)
    p = fb.parts[0]
    chunks = (p.features[i:i + 7] for i in range(0, p.num_features, 7))
    out2 = FBW.write_feature_bank_arrays(tmp_path / "copy", chunks, p.video_ids, p.video_offsets, p.seconds,
                                       p.second_offsets, channels=8, dtype="float32")
    fb2 = FB.FeatureBank.open(out2)
    assert fb2.dtype == np.float32
    np.testing.assert_array_equal(fb2.parts[0].features, p.features.astype(np.float32))
    bad_secs = p.seconds.copy()
    bad_secs[:2] = bad_secs[1::-1]
    with pytest.raises(FB.FeatureBankError, match="seconds must be strictly increasing"):
        FBW.write_feature_bank_arrays(tmp_path / "bad", np.asarray(p.features), p.video_ids, p.video_offsets,
                                    bad_secs, p.second_offsets)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(FB.FeatureBankError, match="rows"):
        FBW.write_feature_bank_arrays(tmp_path / "bad", np.asarray(p.features)[:-1], p.video_ids,
                                    p.video_offsets, p.seconds, p.second_offsets)
    # pickling / deepcopy re-opens the memory map (no copy of the features travels)
    blob = pickle.dumps(fb)
    assert len(blob) < 2000
    fb3 = pickle.loads(blob)
    assert isinstance(fb3.parts[0].features, np.memmap)
    key = [("vid_b", 950)]
    np.testing.assert_array_equal(fb3.sample_batch(key, deterministic=True), fb.sample_batch(key, deterministic=True))
    assert isinstance(copy.deepcopy(fb).parts[0].features, np.memmap)


# ------------------------------------------------------------------------------------------------ pkl / CLI
def test_convert_cli(tmp_path, capsys):
    bank = _random_bank(channels=4, dtype=torch.float32)
    pkl = tmp_path / "lfb_val.pkl"
    torch.save(bank, pkl)
    assert CL.main([str(pkl)]) == 0              # default out: lfb_val/
    assert "wrote" in capsys.readouterr().out
    fb = FB.FeatureBank.open(tmp_path / "lfb_val")
    assert fb.dtype == np.float32 and fb.channels == 4
    with pytest.raises(SystemExit):
        CL.main([str(pkl), "--out", str(tmp_path / "lfb_val")])   # exists, no --overwrite
    assert CL.main([str(pkl), "--out", str(tmp_path / "lfb_val"), "--overwrite",
                               "--dtype", "float16"]) == 0
    assert FB.FeatureBank.open(tmp_path / "lfb_val").dtype == np.float16
    # two inputs merged into one bank
    pkl2 = tmp_path / "other.pkl"
    torch.save({"zzz": {5: [torch.ones(4)]}}, pkl2)
    assert CL.main([str(pkl), str(pkl2), "--out", str(tmp_path / "both")]) == 0
    assert "zzz" in FB.FeatureBank.open(tmp_path / "both") and "vid_a" in FB.FeatureBank.open(tmp_path / "both")


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_convert_refuses_unsafe_and_malformed(tmp_path):
    pkl = tmp_path / "evil.pkl"
    torch.save({"v": {1: [_Evil()]}}, pkl)
    with pytest.raises(FB.FeatureBankError, match="evil.pkl: cannot be read.*weights_only"):
        FBW.convert_lfb(pkl, tmp_path / "out")
    bad = tmp_path / "bad.pkl"
    torch.save({"v": {1: [torch.ones(4)], 2: [torch.ones(5)]}}, bad)
    with pytest.raises(FB.FeatureBankError, match="bad.pkl: video 'v' second 2.*expected 4 channels"):
        FBW.convert_lfb(bad, tmp_path / "out")
    bad2 = tmp_path / "bad2.pkl"
    torch.save({"v": {"x1": [torch.ones(4)]}}, bad2)
    with pytest.raises(FB.FeatureBankError, match="bad2.pkl: video 'v': second 'x1' is not an integer"):
        FBW.convert_lfb(bad2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ modules
@pytest.mark.parametrize("name,cls", [("fbo_avg", "FBOAvg"), ("fbo_max", "FBOMax"), ("fbo_nonlocal", "FBONonLocal")])
def test_fbo_golden(golden, name, cls):
    fx = golden(name)
    m = MODELS.build(fx["config"], key="fbo")
    assert type(m).__name__ == cls
    m.load_state_dict(fx["state_dict"], strict=True)
    m.eval()
    with torch.no_grad():
        out = m(fx["inputs"]["st_feat"], fx["inputs"]["lt_feat"])
        torch.testing.assert_close(out, fx["outputs"]["out"], rtol=1e-4, atol=1e-3)
        m.double()
        out64 = m(fx["inputs"]["st_feat"].double(), fx["inputs"]["lt_feat"].double())
    torch.testing.assert_close(out64, fx["outputs_f64"]["out"], rtol=0, atol=1e-8)


def test_fbo_nonlocal_full_size_keys():
    m = FBO.FBONonLocal(2048, 2048, 512, 1, 300)
    sd = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    expect = {"st_feat_conv.weight": (512, 2048, 1, 1, 1), "st_feat_conv.bias": (512,),
              "lt_feat_conv.weight": (512, 2048, 1, 1, 1), "lt_feat_conv.bias": (512,)}
    for i in (1, 2):
        p = f"non_local_layer_{i}."
        for conv in ("st_feat_conv", "lt_feat_conv", "global_conv", "out_conv"):
            expect[p + conv + ".conv.weight"] = (512, 512, 1, 1, 1)
            expect[p + conv + ".conv.bias"] = (512,)
        expect[p + "ln.weight"] = (512, 1, 1, 1)
        expect[p + "ln.bias"] = (512, 1, 1, 1)
    assert sd == expect
    # 36,043,409 - 31,800,465 (SlowOnly+infer) - 81*(2560-2048) fc weights = the FBO's parameters
    assert sum(v.numel() for v in m.parameters()) == 36_043_409 - 31_800_465 - 81 * 512
    assert float(m.non_local_layer_1.ln.weight.detach().mean()) == 1.0
    assert float(m.non_local_layer_1.out_conv.conv.weight.detach().abs().sum()) > 0     # not zero-initialised
    z = FBO.FBONonLocal(16, 16, 8, 1, 300, zero_init_out_conv=True)
    z.init_weights()  # the init is init_weights' (the builder's call), not the constructor's
    assert float(z.non_local_layer_2.out_conv.conv.weight.detach().abs().sum()) == 0


def test_fbo_pretrained_and_empty_rois(golden, tmp_path):
    fx = golden("fbo_nonlocal")
    ckpt = tmp_path / "fbo.pth"
    torch.save({"meta": {}, "state_dict": fx["state_dict"]}, ckpt)
    m = MODELS.build(fx["config"])
    m.init_weights(str(ckpt))
    assert all(torch.equal(m.state_dict()[k], v) for k, v in fx["state_dict"].items())
    # an FBOHead with pretrained= loads its FBO in init_weights
    FBW.write_feature_bank(tmp_path / "lfb_train", {"v": {900: [torch.ones(32)]}})
    cfg = {"type": "FBOHead", "pretrained": str(ckpt),
           "lfb_cfg": {"lfb_prefix_path": str(tmp_path), "lfb_channels": 32, "dataset_modes": "train"},
           "fbo_cfg": {k: v for k, v in fx["config"].items() if k != "type"} | {"type": "non_local"}}
    head = MODELS.build(cfg).eval()
    head.init_weights()
    assert torch.equal(head.fbo.non_local_layer_2.ln.bias, fx["state_dict"]["non_local_layer_2.ln.bias"])
    with torch.no_grad():
        out = head(torch.zeros(0, 32, 2, 8, 8), torch.zeros(0, 5), [{"img_key": "v,0900"}])
    assert out.shape == (0, 48, 1, 1, 1)
    infer = LIH.LFBInferHead(str(tmp_path / "inf"))
    x = torch.zeros(0, 32, 2, 8, 8)
    assert infer(x, torch.zeros(0, 5), [{"img_key": "v,0900"}]) is x
    assert len(infer.writer) == 0


def _fbo_head_from_golden(fx, tmp_path, **extra):
    prefix = tmp_path / "lfb"
    prefix.mkdir(exist_ok=True)
    torch.save(fx["inputs"]["bank"], prefix / "lfb_train.pkl")
    FBW.convert_lfb([prefix / "lfb_train.pkl"], prefix / "lfb_train")
    cfg = json.loads(json.dumps(fx["config"]))
    cfg["lfb_cfg"]["lfb_prefix_path"] = str(prefix)
    cfg["lfb_cfg"].update(extra)
    head = MODELS.build(cfg, key="roi_head.shared_head")
    head.load_state_dict(fx["state_dict"], strict=True)
    return head.eval()


@pytest.mark.parametrize("deterministic", [False, True])
def test_fbo_head_golden(golden, tmp_path, deterministic):
    fx = golden("fbo_head_nonlocal_deterministic_bank")
    head = _fbo_head_from_golden(fx, tmp_path, deterministic_test=deterministic)
    x, rois, metas = fx["inputs"]["x"], fx["inputs"]["rois"], fx["inputs"]["img_metas"]
    with torch.no_grad():
        lt = head.sample_lfb(rois, metas)
        assert torch.equal(lt, fx["outputs"]["lt_feat"])
        out = head(x, rois, metas)
    torch.testing.assert_close(out, fx["outputs"]["out"], rtol=1e-4, atol=1e-3)
    head.double()
    with torch.no_grad():
        out64 = head(x.double(), rois, metas)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), fx["outputs"]["out"], rtol=1e-4, atol=1e-3)


def test_fbo_head_modes_and_errors(tmp_path):
    bank = _random_bank(channels=8)
    FBW.write_feature_bank(tmp_path / "lfb_train", bank)
    cfg = {"type": "FBOHead",
           "lfb_cfg": {"lfb_prefix_path": str(tmp_path), "lfb_channels": 8, "dataset_modes": ["train"],
                       "device": "gpu", "deterministic_test": True},
           "fbo_cfg": {"type": "avg"}}
    head = MODELS.build(cfg)
    x = torch.randn(3, 8, 2, 4, 4)
    rois = torch.tensor([[0, 0, 0, 5, 5], [1, 0, 0, 5, 5], [0, 1, 1, 5, 5]], dtype=torch.float32)
    metas = [{"img_key": "vid_a,0902"}, {"img_key": "vid_b,0950"}]
    head.eval()
    a, b = head(x, rois, metas), head(x, rois, metas)
    assert a.shape == (3, 16, 1, 1, 1) and torch.equal(a, b)          # seeded test mode
    ref = x.mean(2, keepdim=True).amax((3, 4), keepdim=True)
    assert torch.equal(a[:, :8], ref)
    head.train()
    c, d = head(x, rois, metas), head(x, rois, metas)
    assert not torch.equal(c, d)                                        # random in training
    cfg["fbo_cfg"] = {"type": "max"}
    assert MODELS.build(cfg)(x, rois, metas).shape == (3, 16, 1, 1, 1)
    # only the MMAction2 pickle present: a clear pointer to the converter
    only_pkl = tmp_path / "pk"
    only_pkl.mkdir()
    torch.save(bank, only_pkl / "lfb_val.pkl")
    cfg["lfb_cfg"].update(lfb_prefix_path=str(only_pkl), dataset_modes=["val"])
    with pytest.raises(FB.FeatureBankError, match=r"lfb_val.pkl exists.*actionkit convert-lfb .*lfb_val"):
        MODELS.build(cfg)
    cfg["lfb_cfg"]["lfb_prefix_path"] = str(tmp_path / "nothing")
    with pytest.raises(FB.FeatureBankError, match="missing feature bank"):
        MODELS.build(cfg)
    cfg["lfb_cfg"].update(lfb_prefix_path=str(tmp_path), dataset_modes=["train"], lfb_channels=2048)
    with pytest.raises(FB.FeatureBankError, match="lfb_channels=2048"):
        MODELS.build(cfg)


def test_lfb_infer_head_golden(golden, tmp_path):
    fx = golden("lfb_infer_head")
    cfg = dict(fx["config"], lfb_prefix_path=str(tmp_path / "lfb_half"))
    head = MODELS.build(cfg, key="roi_head.shared_head")
    x = fx["inputs"]["x"]
    with torch.no_grad():
        y = head(x, fx["inputs"]["rois"], fx["inputs"]["img_metas"])
    assert y is x
    feats = head.collected_features()
    assert feats.dtype == torch.float16 and torch.equal(feats, fx["outputs"]["features"])
    assert head.all_metadata == fx["outputs"]["metadata"]
    path = head.write_bank()
    assert path == tmp_path / "lfb_half" / "lfb_train"
    got = FB.FeatureBank.open(path).to_dict()
    want = fx["outputs"]["bank"]
    assert got.keys() == want.keys()
    for v in want:
        assert got[v].keys() == want[v].keys()
        for s in want[v]:
            assert len(got[v][s]) == len(want[v][s])
            assert all(torch.equal(a, b) for a, b in zip(got[v][s], want[v][s]))
    assert LIH.write_lfb_banks(torch.nn.Sequential(head)) == [path]


def test_writer_shards_merge(tmp_path):
    prefix = tmp_path / "lfb"
    w0, w1 = FBW.FeatureBankWriter(prefix, "val"), FBW.FeatureBankWriter(prefix, "val")
    w0.add(["a,0900", "a,0900", "b,0901"], torch.arange(12.0).view(3, 4, 1, 1, 1).half())
    w1.add(["a,0901", "b,0901"], torch.arange(100.0, 108.0).view(2, 4).half())
    calls = []
    assert w1.write(rank=1, world_size=2, barrier=lambda: calls.append(1)) == prefix / "lfb_val"
    assert (prefix / "_lfb_val_1" / "meta.json").is_file() and not (prefix / "lfb_val").exists()
    w0.write(rank=0, world_size=2, barrier=lambda: calls.append(0))
    assert calls == [1, 1, 0, 0]
    assert sorted(p.name for p in prefix.iterdir()) == ["lfb_val"]    # shards removed
    d = FB.FeatureBank.open(prefix / "lfb_val").to_dict()
    assert sorted(d["a"]) == [900, 901] and len(d["a"][900]) == 2
    assert torch.equal(d["a"][900][1], torch.arange(4.0, 8.0).half())
    assert len(d["b"][901]) == 1 and torch.equal(d["b"][901][0], torch.arange(104.0, 108.0).half())  # rank 1 wins
    with pytest.raises(FB.FeatureBankError, match="no features"):
        FBW.FeatureBankWriter(tmp_path / "empty", "train").write(rank=0, world_size=1)


def _ddp_worker(rank: int, world: int, store: str, prefix: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        head = LIH.LFBInferHead(prefix, dataset_mode="train")
        x = torch.full((2, 4, 1, 2, 2), float(rank))
        rois = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 1]], dtype=torch.float32)
        head(x, rois, [{"img_key": f"vid{rank},{900 + rank}"}])
        head.write_bank()
        assert (Path(prefix) / "lfb_train" / "meta.json").is_file()   # visible to every rank after the call
    finally:
        torch.distributed.destroy_process_group()


def test_lfb_infer_head_ddp_gloo(tmp_path):
    import torch.multiprocessing as mp
    prefix = tmp_path / "lfb"
    # spawn, not fork: forking a process whose OpenMP pool is running can deadlock
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "store"), str(prefix)), nprocs=2,
                       start_method="spawn")
    d = FB.FeatureBank.open(prefix / "lfb_train").to_dict()
    assert sorted(d) == ["vid0", "vid1"] and sorted(d["vid1"]) == [901] and len(d["vid1"][901]) == 2
    assert float(d["vid1"][901][0][0]) == 1.0
    assert sorted(p.name for p in prefix.iterdir()) == ["lfb_train"]
