"""The converter's file routes, round trips, strictness and error messages; pretrained loading
(on files the tests make: no network); the `jaxnets convert` command."""

import argparse
import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from conftest import largest_file, run_cli, sweep, torchvision_model, with_file_size_limit

import jaxnets
from jaxnets import pretrained
from jaxnets.convert import ConversionError, from_torchvision, load_state_dict, to_torchvision
from jaxnets_cli import main as cli


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def resnet18_state():
    return torchvision_model("resnet18", num_classes=10).state_dict()


@pytest.mark.parametrize(
    "name",
    sweep(["resnet18", "resnext50_32x4d", "vgg11_bn", "alexnet"], fast=("resnet18", "alexnet")),
)
def test_round_trip_is_bit_exact(name):
    state = torchvision_model(name, num_classes=10).state_dict()
    variables = from_torchvision(name, state)
    back = to_torchvision(name, variables)
    assert set(back) == set(state)
    for key, tensor in state.items():
        expected = 0 if key.endswith("num_batches_tracked") else tensor.numpy()
        np.testing.assert_array_equal(back[key], expected, err_msg=key)
    # strict loading into torchvision works, and so does the way back into JAX.
    model = torchvision.models.get_model(name, num_classes=10)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    assert_trees_equal(from_torchvision(name, model.state_dict()), variables)


def test_pth_checkpoint_and_safetensors_routes(tmp_path, resnet18_state):
    expected = from_torchvision("resnet18", resnet18_state)
    torch.save(resnet18_state, tmp_path / "plain.pth")
    # torchvision's reference scripts: {'model': ..., 'optimizer': ..., 'args': Namespace}
    torch.save(
        {"model": resnet18_state, "epoch": 3, "args": argparse.Namespace(lr=0.1)},
        tmp_path / "checkpoint.pth",
    )
    torch.save({"state_dict": resnet18_state}, tmp_path / "lightning.ckpt")
    torch.save({f"module.{k}": v for k, v in resnet18_state.items()}, tmp_path / "ddp.pt")
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in resnet18_state.items()}, tmp_path / "w.safetensors"
    )
    for file in ["plain.pth", "checkpoint.pth", "lightning.ckpt", "ddp.pt", "w.safetensors"]:
        assert_trees_equal(from_torchvision("resnet18", tmp_path / file), expected)
    # half-precision files convert to float32 parameters
    half = from_torchvision("resnet18", {k: v.half() for k, v in resnet18_state.items()})
    assert half["params"]["conv1"]["kernel"].dtype == np.float32


def test_save_state_dict_writes_pth_and_safetensors(tmp_path, resnet18_state):
    from jaxnets.convert import save_state_dict

    state = to_torchvision("resnet18", from_torchvision("resnet18", resnet18_state))
    save_state_dict(state, tmp_path / "out.pth")
    save_state_dict(state, tmp_path / "out.safetensors")
    for file in ["out.pth", "out.safetensors"]:
        loaded = load_state_dict(tmp_path / file)
        assert set(loaded) == set(state)
        np.testing.assert_array_equal(loaded["fc.weight"], state["fc.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pth", "out.safetensors"]
    with pytest.raises(ConversionError, match="unknown output format"):
        save_state_dict(state, tmp_path / "out.npz")


def test_weights_of_another_architecture_are_named():
    state = torchvision.models.resnet50().state_dict()
    with pytest.raises(ConversionError) as error:
        from_torchvision("resnet34", state)
    message = str(error.value)
    assert "\n" not in message
    assert "unexpected keys (layer1.0.conv3.weight" in message
    assert "they look like resnet50 weights" in message
    assert "layer1.0.conv1.weight: expected (64, 64, 3, 3), found (64, 64, 1, 1)" in message
    assert len(error.value.unexpected) == 85


@pytest.mark.parametrize("dtype", [torch.int8, torch.bool, torch.int64])
def test_integer_or_boolean_weights_are_refused_naming_the_key(resnet18_state, dtype):
    state = dict(resnet18_state)
    state["conv1.weight"] = state["conv1.weight"].to(dtype)
    message = r"resnet18: conv1.weight holds (int8|bool|int64) values where the model has float"
    with pytest.raises(ConversionError, match=message):
        from_torchvision("resnet18", state)


def test_floats_of_another_width_are_cast(resnet18_state):
    """float16 widens to float32 exactly; float64 rounds as torch's .float() does."""
    half = {k: v.half() if v.is_floating_point() else v for k, v in resnet18_state.items()}
    double = {k: v.double() if v.is_floating_point() else v for k, v in resnet18_state.items()}
    from_half = from_torchvision("resnet18", half)
    np.testing.assert_array_equal(
        from_half["params"]["conv1"]["kernel"],
        np.transpose(half["conv1.weight"].float().numpy(), (2, 3, 1, 0)),
    )
    from_double = from_torchvision("resnet18", double)
    np.testing.assert_array_equal(
        from_double["params"]["fc"]["kernel"], resnet18_state["fc.weight"].numpy().T
    )


def test_missing_unexpected_and_mismatched_keys(resnet18_state):
    state = dict(resnet18_state)
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.zeros(3, 3)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    with pytest.raises(ConversionError) as error:
        from_torchvision("resnet18", state)
    assert error.value.missing == ["layer1.0.bn1.running_var"]
    assert error.value.unexpected == ["extra.weight"]
    assert error.value.mismatched == [
        "layer2.0.conv1.weight: expected (128, 64, 3, 3), found (128, 64, 1, 1)"
    ]


def test_head_of_another_size_needs_an_explicit_reinit(resnet18_state):
    with pytest.raises(ConversionError, match=r"fc.weight has 10 classes but num_classes=5"):
        from_torchvision("resnet18", resnet18_state, num_classes=5)
    variables = from_torchvision("resnet18", resnet18_state, num_classes=5, reinit_head=True)
    assert variables["params"]["fc"]["kernel"].shape == (512, 5)
    bound = 1 / 512**0.5  # torch Linear's default init
    assert 0 < np.abs(variables["params"]["fc"]["kernel"]).max() <= bound
    original = from_torchvision("resnet18", resnet18_state)
    np.testing.assert_array_equal(
        variables["params"]["layer4_1"]["conv2"]["kernel"],
        original["params"]["layer4_1"]["conv2"]["kernel"],
    )
    # By default the number of classes is read off the file.
    assert original["params"]["fc"]["kernel"].shape == (512, 10)


def test_unreadable_files_give_one_line_errors(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint" * 10)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json")
    (tmp_path / "weights.h5").write_bytes(b"")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "module.pth")
    torch.save(torchvision.models.resnet18(), tmp_path / "model.pth")
    torch.save({"epoch": 3}, tmp_path / "no_tensors.pth")
    cases = {
        "truncated.pth": "not a readable PyTorch file",
        "garbage.pth": "not a readable PyTorch file",
        "garbage.safetensors": "not a readable safetensors file",
        "weights.h5": "unknown weights format '.h5'",
        "module.pth": "holds a pickled torch.nn.modules.linear.Linear, not a state_dict",
        "model.pth": "holds a pickled torchvision.models.resnet.ResNet, not a state_dict",
        "no_tensors.pth": "no tensors found",
    }
    for file, expected in cases.items():
        with pytest.raises(ConversionError, match=expected) as error:
            from_torchvision("resnet18", tmp_path / file)
        assert "\n" not in str(error.value) and file in str(error.value)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        from_torchvision("resnet18", tmp_path / "absent.pth")


def test_to_torchvision_rejects_variables_of_another_architecture(resnet18_state):
    variables = from_torchvision("resnet18", resnet18_state)
    with pytest.raises(ConversionError, match=r"resnet34: variables do not fit: \d+ missing"):
        to_torchvision("resnet34", variables)


# --- pretrained weights -------------------------------------------------------------------------


def test_metadata_matches_torchvision_weight_enums():
    from conftest import TORCHVISION_MODELS

    for name in TORCHVISION_MODELS:
        ours = {w.tag: w for w in pretrained.list_weights(name)}
        theirs = {w.name: w for w in torchvision.models.get_model_weights(name)}
        assert set(ours) == set(theirs), name
        for tag, weights in theirs.items():
            meta, transforms = ours[tag], weights.transforms()
            assert weights.url == meta.download_url
            assert weights.url.split("-")[-1].startswith(meta.sha256_prefix)
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            np.testing.assert_equal([meta.acc1, meta.acc5], [metrics["acc@1"], metrics["acc@5"]])
            assert meta.file_size_mb == weights.meta["_file_size"]
            assert [meta.resize] == transforms.resize_size and [meta.crop] == transforms.crop_size
            np.testing.assert_allclose(meta.mean, transforms.mean)
            np.testing.assert_allclose(meta.std, transforms.std)
            assert transforms.antialias and transforms.interpolation.value == meta.interpolation
            categories = weights.meta["categories"]
            assert (meta.classes and list(meta.classes)) == categories


def test_weight_tags_and_errors():
    assert pretrained.get_weights("resnet50", "DEFAULT").tag == "IMAGENET1K_V2"
    assert pretrained.get_weights("alexnet", "DEFAULT").tag == "IMAGENET1K_V1"
    with pytest.raises(ValueError, match="alexnet has no weights 'IMAGENET1K_V2'; known"):
        pretrained.get_weights("alexnet", "IMAGENET1K_V2")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A torch hub cache and a 'server' (a file:// URL) holding a random resnet18."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("JAXNETS_CACHE", str(tmp_path / "cache"))
    served = tmp_path / "server" / "resnet18.pth"
    served.parent.mkdir()
    torch.save(torchvision_model("resnet18").state_dict(), served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    weights = pretrained.Weights(
        "resnet18", "TEST", f"resnet18-{digest[:8]}.pth", 1.0, 2.0, 0.0, url=served.as_uri()
    )
    return weights, served


def test_load_pretrained_downloads_verifies_converts_and_caches(hub, monkeypatch):
    weights, served = hub
    variables, meta = pretrained.load_pretrained("resnet18", weights)
    downloaded = pretrained.torch_hub_dir() / weights.filename
    assert downloaded.read_bytes() == served.read_bytes()
    assert meta.resize == 256 and meta.classes[0] == "tench"
    assert_trees_equal(variables, from_torchvision("resnet18", served))
    assert len(list(pretrained.cache_dir().glob("*.safetensors"))) == 1

    # A second load comes from the cache: no conversion, same tree.
    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(pretrained, "from_torchvision", no_conversion)
    again, _ = pretrained.load_pretrained("resnet18", weights)
    assert_trees_equal(again, variables)


def test_load_pretrained_rejects_a_file_with_the_wrong_hash(hub):
    weights, _ = hub
    target = pretrained.torch_hub_dir() / weights.filename
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tampered")
    with pytest.raises(RuntimeError, match=r"sha256 starts with .*expected .*corrupt"):
        pretrained.load_pretrained("resnet18", weights)


def test_load_pretrained_without_network_says_where_to_put_the_file(hub, tmp_path):
    weights, _ = hub
    offline = pretrained.Weights(
        "resnet18", "X", weights.filename, 0, 0, 0, url="file:///absent.pth"
    )
    with pytest.raises(RuntimeError, match=r"could not download .*copy the file to .*checkpoints"):
        pretrained.load_pretrained("resnet18", offline)
    assert not list(pretrained.torch_hub_dir().iterdir())  # nothing half-written
    with pytest.raises(FileNotFoundError, match=r"download https://download\.pytorch\.org/models/"):
        pretrained.load_pretrained("resnet18", "IMAGENET1K_V1", download_missing=False)


def test_load_pretrained_from_an_explicit_path(hub, tmp_path):
    _, served = hub
    variables, meta = pretrained.load_pretrained("resnet18", path=served)
    assert meta.tag == "IMAGENET1K_V1"
    assert_trees_equal(variables, from_torchvision("resnet18", served))


# --- command line -------------------------------------------------------------------------------


def test_convert_command_both_ways(tmp_path, capsys, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    code, out, _ = run_cli(
        capsys, "convert", "resnet18", "--weights", str(tmp_path / "r18.pth"), "--out",
        str(tmp_path / "export"),
    )  # fmt: skip
    assert code == 0 and "10 classes, 11,181,642 parameters" in out
    meta = json.loads((tmp_path / "export" / "jaxnets.json").read_text())
    assert meta["arch"] == "resnet18" and meta["num_classes"] == 10
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o777 & ~umask  # not 0700
    code, _, err = run_cli(capsys, "convert", "resnet18", "--weights", str(tmp_path / "export"),
                           "--out", str(tmp_path / "x"))  # fmt: skip
    assert code == 2 and "export: a directory, not a weights file" in err
    for suffix in ["pth", "safetensors"]:
        out_file = tmp_path / f"back.{suffix}"
        code, _, _ = run_cli(
            capsys, "convert", "resnet18", "--from-jax", str(tmp_path / "export"), "--out",
            str(out_file),
        )  # fmt: skip
        assert code == 0
        written = (torch.load(out_file) if suffix == "pth"
                   else safetensors.torch.load_file(out_file))  # fmt: skip
        # Every tensor as torch writes it: num_batches_tracked 0-d, not (1,).
        assert {k: v.shape for k, v in written.items()} == {
            k: v.shape for k, v in resnet18_state.items()
        }
        model = torchvision.models.resnet18(num_classes=10)
        model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in load_state_dict(out_file).items()}, strict=True
        )
        for key, tensor in resnet18_state.items():
            if not key.endswith("num_batches_tracked"):
                assert torch.equal(model.state_dict()[key], tensor), key


def test_convert_command_errors_are_one_line_and_write_nothing(tmp_path, capsys, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["resnet34", "--weights", "r18.pth"], "resnet34: weights do not fit"),
        (["resnet18", "--weights", "absent.pth"], "weights file not found"),
        (["resnet19", "--weights", "r18.pth"], "unknown model 'resnet19'; closest: resnet18"),
        (["resnet18", "--weights", "r18.pth", "--num-classes", "3"], "--reinit-head"),
        (["resnet18", "--from-jax", "r18.pth"], "not a jaxnets export"),
        (["resnet18", "--from-jax", "."], "nor a training workdir"),
    ]
    for args, expected in cases:
        args = [str(tmp_path / a) if a.endswith(".pth") or a == "." else a for a in args]
        code, _, err = run_cli(capsys, "convert", *args, "--out", str(tmp_path / "new"))
        assert code == 2 and expected in err and err.count("\n") == 1, (args, err)
    code, _, err = run_cli(
        capsys, "convert", "resnet18", "--weights", str(tmp_path / "r18.pth"), "--out",
        str(tmp_path / "taken"),
    )  # fmt: skip
    assert code == 2 and "exists and is not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_damaged_export_is_one_line(tmp_path, capfd, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    assert cli.main(["convert", "resnet18", "--weights", str(tmp_path / "r18.pth"),
                     "--out", str(tmp_path / "export")]) == 0  # fmt: skip
    data = largest_file(tmp_path / "export" / "variables")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    capfd.readouterr()
    code = cli.main(["convert", "resnet18", "--from-jax", str(tmp_path / "export"),
                     "--out", str(tmp_path / "back.pth")])  # fmt: skip
    err = capfd.readouterr().err  # file descriptor 2: orbax's threads and TensorStore's too
    assert code == 2 and err.count("\n") == 1, err
    assert f"{tmp_path / 'export' / 'variables'}: unreadable (ValueError: OUT_OF_RANGE" in err
    assert 'Error reading "' in err  # TensorStore's words: the array it could not read
    assert not (tmp_path / "back.pth").exists()


@pytest.mark.slow  # a subprocess
def test_a_full_disk_while_exporting_is_one_line_and_leaves_nothing(tmp_path, resnet18_state):
    torch.save(resnet18_state, tmp_path / "r18.pth")
    out = tmp_path / "export"
    command = [sys.executable, "-m", "jaxnets_cli", "convert", "resnet18", "--weights",
               str(tmp_path / "r18.pth"), "--out", str(out)]  # fmt: skip
    result = subprocess.run(
        with_file_size_limit(1_000_000, command), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == f"jaxnets convert: error: cannot write {out} (File too large)\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r18.pth"]  # no staging directory left


def test_a_file_without_read_permission_is_named_as_such(tmp_path, resnet18_state):
    weights = tmp_path / "r18.pth"
    torch.save(resnet18_state, weights)
    weights.chmod(0)
    # Root reads any file: without the two capabilities that let it, it is refused like anyone.
    drop_root = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    result = subprocess.run(
        [*(drop_root if os.geteuid() == 0 else []), sys.executable, "-m", "jaxnets_cli",
         "convert", "resnet18", "--weights", str(weights), "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == f"jaxnets convert: error: {weights}: no permission to read this file\n"
    assert not (tmp_path / "out").exists()


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "jaxnets_cli", "models"], capture_output=True, text=True, check=True
    )
    assert "resnet50           IMAGENET1K_V1 IMAGENET1K_V2" in result.stdout
    assert len(result.stdout.splitlines()) == len(jaxnets.list_models())


def test_a_file_that_holds_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    # Plain pickles too, of torch's protocol and of one torch warns it did not write.
    for protocol in (2, 4):
        evil = tmp_path / f"evil{protocol}.pth"
        evil.write_bytes(pickle.dumps({"conv1.weight": Payload()}, protocol=protocol))
    cases = {
        "evil.pth": r"holds pickled code \(posix.system\) that jaxnets refuses to run",
        "evil2.pth": r"holds pickled code \(posix.system\) that jaxnets refuses to run",
        "evil4.pth": r"weights-only unpickler: Unsupported operand 149\)$",
    }
    for name, message in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning besides the one line
            with pytest.raises(ConversionError, match=message):
                from_torchvision("resnet18", tmp_path / name)
    assert not marker.exists()
