"""gca.registry.Registry, and the four registries built on it (layers, metric losses, backbones, datasets)."""
from __future__ import annotations

import pytest

import gca
import gca.backbones
import gca.data
import gca.losses
from gca.registry import Registry, UnknownNameError


def _fresh() -> Registry:
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(x=1):
        return ("alpha", x)

    reg.register("beta", lambda x=2: ("beta", x))
    return reg


# ------------------------------------------------------------------------------------------ registering
def test_decorator_and_plain_call_register_and_return_the_callable():
    reg = Registry("widget")

    def gamma():
        return "gamma"

    assert reg.register("gamma")(gamma) is gamma       # decorator with a name
    assert reg.register("delta", gamma) is gamma       # plain call

    @reg.register                                      # bare decorator: the function's name
    def epsilon():
        return "epsilon"

    @reg.register()                                    # empty call: the function's name too
    def zeta():
        return "zeta"

    assert reg.list() == ["delta", "epsilon", "gamma", "zeta"]
    assert reg.get("epsilon") is epsilon and reg["zeta"] is zeta
    assert len(reg) == 4 and list(reg) == reg.list()


def test_overwrite_is_guarded_and_names_the_existing_entry():
    reg = _fresh()
    old = reg.get("alpha")
    with pytest.raises(ValueError, match=r"^widget 'alpha' is already registered \(.*alpha\); "
                                         r"pass overwrite=True to replace it$"):
        reg.register("alpha", lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", old)                      # even the same object again needs overwrite=True
    assert reg.get("alpha") is old

    def new():
        return "new"

    reg.register("alpha", new, overwrite=True)
    assert reg.get("alpha") is new and reg.list() == ["alpha", "beta"]


def test_bad_registrations():
    reg = Registry("widget")
    with pytest.raises(TypeError, match="widget entry must be callable, got int"):
        reg.register("one", 1)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("", lambda: None)
    with pytest.raises(ValueError, match="non-empty string"):
        reg.register("ok", lambda: None, aliases=("",))
    assert len(reg) == 0


def test_list_filters_with_wildcards_case_insensitively():
    reg = Registry("widget")
    for name in ("resnet50", "resnet18", "vit_small", "ResNeXt"):
        reg.register(name, lambda: None)
    assert reg.list() == ["ResNeXt", "resnet18", "resnet50", "vit_small"]
    assert reg.list("res*") == ["ResNeXt", "resnet18", "resnet50"]
    assert reg.list("resnet?0") == ["resnet50"]
    assert reg.list("*_small") == ["vit_small"]
    assert reg.list("nothing*") == []


def test_create_calls_the_entry_with_the_arguments():
    reg = _fresh()
    assert reg.create("alpha") == ("alpha", 1)
    assert reg.create("beta", 5) == ("beta", 5)
    assert reg.create("alpha", x=7) == ("alpha", 7)


def test_contains_and_unregister():
    reg = _fresh()
    assert "alpha" in reg and "gamma" not in reg and 3 not in reg and None not in reg
    fn = reg.get("beta")
    assert reg.unregister("beta") is fn
    assert "beta" not in reg and reg.list() == ["alpha"]
    with pytest.raises(UnknownNameError, match="unknown widget 'beta'"):
        reg.unregister("beta")


# ------------------------------------------------------------------------------------------ unknown names
def test_unknown_name_is_one_error_type_with_a_one_line_message():
    reg = _fresh()
    for call in (lambda: reg.get("alpah"), lambda: reg.create("alpah"), lambda: reg["alpah"],
                 lambda: reg.canonical("alpah")):
        with pytest.raises(UnknownNameError) as info:
            call()
        assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
        message = str(info.value)
        assert message == "unknown widget 'alpah' (did you mean 'alpha'?); available: alpha, beta"
        assert "\n" not in message


def test_unknown_name_without_a_close_match_or_not_a_string():
    reg = _fresh()
    with pytest.raises(UnknownNameError) as info:
        reg.get("zzz")
    assert str(info.value) == "unknown widget 'zzz'; available: alpha, beta"
    with pytest.raises(UnknownNameError, match=r"^unknown widget \['alpha'\]; available: alpha, beta$"):
        reg.get(["alpha"])
    with pytest.raises(ValueError, match=r"^unknown widget 'x'; available: none registered$"):
        Registry("widget").get("x")


def test_newlines_in_a_bad_name_stay_on_one_line():
    with pytest.raises(UnknownNameError) as info:
        _fresh().get("a\nb")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ normalize / aliases
def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def test_normalized_names_and_aliases():
    reg = Registry("dataset", normalize=_norm)
    reg.register("cub200", dict, aliases=("cub", "cub2002011"))
    for spelling in ("cub200", "CUB-200", "cub", "CUB_200_2011"):
        assert reg.canonical(spelling) == "cub200" and reg.get(spelling) is dict and spelling in reg
    assert reg.list() == ["cub200"]                      # aliases are not listed
    with pytest.raises(ValueError, match=r"dataset 'CUB_200' is already registered as 'cub200' \(builtins\.dict\)"):
        reg.register("CUB_200", list)
    with pytest.raises(ValueError, match=r"dataset 'cub' is already registered as an alias of 'cub200'"):
        reg.register("cub", list)
    with pytest.raises(ValueError, match=r"dataset 'cub' is already registered as an alias of 'cub200'"):
        reg.register("birds", list, aliases=("cub",))
    assert reg.list() == ["cub200"]                      # a refused registration changes nothing
    with pytest.raises(UnknownNameError, match=r"unknown dataset 'cub2000' \(did you mean 'cub200'\?\)"):
        reg.get("cub2000")


def test_overwrite_keeps_aliases_and_can_respell():
    reg = Registry("dataset", normalize=_norm)
    reg.register("cub200", dict, aliases=("cub",))
    reg.register("CUB-200", list, overwrite=True)        # same entry, new spelling and object
    assert reg.list() == ["CUB-200"] and reg.get("cub") is list
    reg.register("cub", set, overwrite=True)             # an alias taken over by a new entry
    assert reg.list() == ["CUB-200", "cub"] and reg.get("cub") is set and reg.get("cub200") is list
    reg.unregister("cub200")
    assert reg.list() == ["cub"]


# ------------------------------------------------------------------------------------------ the four registries
def test_the_four_registries_are_registry_objects_with_their_entries():
    from gca.backbones import BACKBONES, create_backbone, list_backbones, register_backbone
    from gca.data import DATASETS, UnknownDatasetError, canonical_name, list_datasets, register_dataset
    from gca.losses import METRIC_LOSSES, list_metric_losses, register_metric_loss
    from gca.nn import LAYERS, list_layers, register_layer

    expected = {
        LAYERS: ("layer type", {"gca", "gatv2", "transformer", "gine", "gen"}),
        METRIC_LOSSES: ("metric loss", {"npair", "proxy_anchor", "multi_similarity", "triplet"}),
        BACKBONES: ("backbone", {"omniglot_cnn", "resnet50", "googlenet", "dino_vits16", "efficientnet_lite0"}),
        DATASETS: ("dataset", {"cub200", "cars196", "sop", "inshop", "omniglot", "caltech101", "imagefolder"}),
    }
    for reg, (kind, names) in expected.items():
        assert isinstance(reg, Registry) and reg.kind == kind
        assert names <= set(reg.list())
    # the public functions are the registries' own methods
    assert (list_layers, register_layer) == (LAYERS.list, LAYERS.register)
    assert (gca.list_layers, gca.register_layer, gca.LAYERS) == (LAYERS.list, LAYERS.register, LAYERS)
    assert (list_metric_losses, register_metric_loss) == (METRIC_LOSSES.list, METRIC_LOSSES.register)
    assert (list_backbones, register_backbone) == (BACKBONES.list, BACKBONES.register)
    assert (list_datasets, register_dataset, canonical_name) == (DATASETS.list, DATASETS.register,
                                                                DATASETS.canonical)
    assert UnknownDatasetError is UnknownNameError
    assert LAYERS.list("g*") == ["gatv2", "gca", "gen", "gine"]
    assert BACKBONES.list("res*") == ["resnet50"]
    assert DATASETS.canonical("In-Shop") == "inshop" and DATASETS.canonical("Stanford_Online_Products") == "sop"
    with pytest.raises(ValueError, match=r"^unknown backbone 'resnet5' \(did you mean 'resnet50'\?\); available: "):
        create_backbone("resnet5")


@pytest.mark.parametrize("create, name, kind", [
    (lambda n: gca.create_layer(n, 16), "gatt", "layer type"),
    (lambda n: gca.losses.create_metric_loss(n, 4, 8), "npar", "metric loss"),
    (lambda n: gca.backbones.create_backbone(n), "omniglot_cn", "backbone"),
    (lambda n: gca.data.create_dataset(n), "cub-2000", "dataset"),
])
def test_every_create_function_raises_the_same_error(create, name, kind):
    with pytest.raises(UnknownNameError) as info:
        create(name)
    message = str(info.value)
    assert message.startswith(f"unknown {kind} {name!r} (did you mean ") and "; available: " in message
    assert "\n" not in message


def test_registered_layer_and_metric_loss_are_found_by_the_library():
    from gca.losses import METRIC_LOSSES, create_metric_loss
    from gca.nn import LAYERS

    @METRIC_LOSSES.register("_test_npair")
    def _test_npair(num_classes, embedding_dim):
        return gca.losses.NPairLoss()

    try:
        assert isinstance(create_metric_loss("_test_npair", 3, 8), gca.losses.NPairLoss)
        LAYERS.register("_test_gca", LAYERS.get("gca"))
        assert type(gca.create_layer("_test_gca", 16)) is type(gca.create_layer("gca", 16))
    finally:
        METRIC_LOSSES.unregister("_test_npair")
        if "_test_gca" in LAYERS:
            LAYERS.unregister("_test_gca")
    assert "_test_npair" not in METRIC_LOSSES
