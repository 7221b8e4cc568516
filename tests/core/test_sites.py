"""Site names: parsing, computation order, the one BOS rule, and clear errors."""

from __future__ import annotations

import pytest

from circuitkit.sites import (
    COMPONENT_KINDS,
    N_SKIPPED_POSITIONS,
    after_bos,
    all_sites,
    component_sites,
    parse_site,
    precedes,
    sort_sites,
    validate_sites,
)


def test_parse_every_form():
    assert parse_site("embed").kind == "embed" and parse_site("out").kind == "out"
    h = parse_site("L3.H7")
    assert (h.kind, h.layer, h.head) == ("head", 3, 7)
    for name, kind in [("L0.attn", "attn"), ("L2.MLP", "mlp"), ("L1.resid_pre", "resid_pre"),
                       ("L1.resid_post", "resid_post")]:
        p = parse_site(name)
        assert (p.kind, p.layer) == (kind, int(name[1]))


@pytest.mark.parametrize("bad", ["L", "L0.mlp", "H0", "L0.H", "l0.attn", "L0.resid", ""])
def test_unknown_forms_name_the_valid_ones(bad):
    with pytest.raises(ValueError, match="valid forms are embed"):
        parse_site(bad)
    with pytest.raises(ValueError, match="strings"):
        parse_site(3)


def test_computation_order_and_parallel_heads():
    sites = all_sites(2, 2)
    assert sites[:6] == ["embed", "L0.resid_pre", "L0.H0", "L0.H1", "L0.attn", "L0.MLP"]
    assert sites[-1] == "out" and sort_sites(reversed(sites)) == sites
    assert precedes("L0.H1", "L0.MLP") and not precedes("L0.H0", "L0.H1") and not precedes("L0.H1", "L0.H0")
    assert precedes("L0.resid_post", "L1.H0") and precedes("L1.MLP", "out")
    comps = component_sites(2, 2)
    assert {parse_site(s).kind for s in comps} == set(COMPONENT_KINDS)
    assert comps == ["embed", "L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP", "out"]
    with pytest.raises(ValueError, match="unknown site kinds"):
        all_sites(1, 1, kinds=["heads"])


def test_after_bos_is_the_one_rule():
    assert N_SKIPPED_POSITIONS == 1
    assert after_bos(0, ["<bos>", "a", "b"]) == [1, 2] and after_bos(3, ["x"]) == []
    from circuitkit.runtime.inputs import positions_for

    assert positions_for("after_bos", 0, 4, list("abcd")) == after_bos(0, list("abcd"))
    with pytest.raises(ValueError, match="after_bos"):
        positions_for("first", 0, 4, list("abcd"))


def test_validate_sites_errors():
    avail = all_sites(1, 2)
    assert validate_sites(["L0.MLP", "embed"], avail) == ["embed", "L0.MLP"]
    with pytest.raises(TypeError, match=r"got the string 'L0.resid_pre'; did you mean \['L0.resid_pre'\]"):
        validate_sites("L0.resid_pre", avail)
    with pytest.raises(ValueError, match="no sites requested"):
        validate_sites([], avail)
    with pytest.raises(ValueError, match="unknown site 'L3.MLP' for this model; valid sites are: embed"):
        validate_sites(["L3.MLP"], avail)
