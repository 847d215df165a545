"""Fit check: memory mapping onto block RAM / SPRAM, multipliers, the miss message, --array auto."""

import pytest

import boards.fit as fit_module
from boards.fit import (DSP_BUDGET, Demand, FitError, MemoryNeed, blocks_for, candidate_arrays, check_fit,
                        pick_array)
from boards.profiles import get_profile


def test_memories_map_onto_whole_blocks_in_their_best_shape():
    wide = MemoryNeed("w", width=80, depth=300, initialised=True)
    assert blocks_for(wide, "ecp5") == 3  # 3 x (36 x 512)
    assert blocks_for(wide, "ice40") == 10  # 5 x 2 x (16 x 256) or 10 x (8 x 512)
    assert blocks_for(MemoryNeed("deep", 8, 2049), "ecp5") == 2  # 9 x 2048 twice
    assert blocks_for(MemoryNeed("tiny", 32, 16), "ecp5") == 0  # stays in LUT RAM
    assert blocks_for(MemoryNeed("tiny", 32, 16), "ice40") == 2  # no LUT RAM on iCE40


def test_spram_takes_only_uninitialised_single_port_memories():
    up5k = get_profile("icebreaker")
    act = MemoryNeed("act", 16, 32768, single_port=True)  # 512 Kbit: two SPRAMs
    weights = MemoryNeed("w", 8, 1024, initialised=True, single_port=True)
    r = check_fit(Demand((act, weights), multipliers=4), up5k)
    assert r.fits and r.placement == {"act": "spram", "w": "bram"}
    assert [c.need for c in r.checks[:2]] == [2, 2]
    dual = check_fit(Demand((MemoryNeed("act", 16, 32768), weights), multipliers=4), up5k)
    assert not dual.fits and dual.placement["act"] == "bram"
    assert "SPRAM" in dual.message()


def test_a_miss_says_by_how_much_and_which_knob_helps():
    weights = MemoryNeed("fc1_weights", 8, 600 * 1024, initialised=True)  # 4.7 Mbit
    r = check_fit(Demand((weights,), multipliers=16), get_profile("ulx3s-12f"))
    msg = r.message()
    assert not r.fits and "\n" not in msg
    assert "block RAM" in msg and "has 32" in msg and "x," in msg
    assert "more pruning or fewer weight bits" in msg and "fc1_weights" in msg
    assert "another board" not in msg or "ulx3s-85f" in msg

    many = check_fit(Demand((MemoryNeed("w", 8, 512, True),), multipliers=90), get_profile("icebreaker"))  # within the 85F's DSP budget
    assert not many.fits and "a smaller array" in many.message() and "ulx3s-85f" in many.message()


def test_candidate_arrays_go_from_most_pes_down_squarest_first():
    shapes = candidate_arrays()
    assert shapes[0] == (16, 16) and shapes[-1] == (1, 1) and len(shapes) == 256
    assert shapes.index((8, 8)) < shapes.index((16, 4))
    pes = [r * c for r, c in shapes]
    assert pes == sorted(pes, reverse=True)


def test_pick_array_takes_the_largest_that_fits():
    up5k = get_profile("icebreaker")
    weights = (MemoryNeed("w", 8, 4096, initialised=True),)
    (rows, cols), fit = pick_array(lambda r, c: Demand(weights, multipliers=r * c), up5k)
    assert fit.fits
    for r, c in candidate_arrays():
        if r * c > rows * cols:
            assert not check_fit(Demand(weights, multipliers=r * c), up5k).fits


def test_pick_array_refuses_when_nothing_fits():
    huge = (MemoryNeed("w", 8, 1 << 20, initialised=True),)
    with pytest.raises(FitError, match=r"no array from 16x16 down to 1x1 fits: does not fit icebreaker"):
        pick_array(lambda r, c: Demand(huge, multipliers=r * c), get_profile("icebreaker"))


def test_open_toolchains_need_a_dsp_per_multiplier_vivado_falls_back_to_luts():
    """yosys puts every multiplier on a DSP (nextpnr then fails: measured 19/8 SB_MAC16 on a 6x3 array)."""
    w = (MemoryNeed("w", 8, 512, True),)
    up5k = check_fit(Demand(w, multipliers=9, logic_luts=1000), get_profile("icebreaker"))
    assert not up5k.fits and "needs 9 DSPs, the iCE40UP5K has 8" in up5k.message()
    assert check_fit(Demand(w, multipliers=8, logic_luts=1000), get_profile("icebreaker")).fits
    arty = check_fit(Demand(w, multipliers=100, logic_luts=1000), get_profile("arty"))
    assert arty.fits and any("10 multipliers beyond the DSPs" in c.resource for c in arty.checks)


def test_an_ecp5_design_may_use_only_the_dsp_budget():
    """The paper model's arrays on the ULX3S-85F (156 DSPs): 10x9 (91 multipliers with the sparse
    engine's) fits; 10x12 (121) and 10x14 (142), which nextpnr did not place and route, do not, and
    --array auto takes the fastest within the budget. Without an ECP5 budget auto took 10x14."""
    from boards.fit import accelerator_demand, auto_array
    from export.compile import default_plan
    from hw.config import ArrayConfig

    plan, board = default_plan(), get_profile("ulx3s-85f")
    assert DSP_BUDGET["ecp5"] < 121 / 156
    assert check_fit(accelerator_demand(plan, 10, 9), board).fits
    for rows, cols, need in ((10, 12, 121), (10, 14, 142)):
        miss = check_fit(accelerator_demand(plan, rows, cols), board)
        budget = int(156 * DSP_BUDGET["ecp5"])
        assert not miss.fits and (f"of the part's 156: more do not place and route) needs {need} DSPs, "
                                  f"the LFE5U-85F has {budget}") in miss.message(), miss.message()
        assert "a smaller array" in miss.message()
    config, fit = auto_array(plan, board)
    assert config == ArrayConfig(10, 9) and fit.fits


def test_pick_array_with_a_cost_takes_the_cheapest_that_fits_fewer_pes_then_squarest_on_a_tie(monkeypatch):
    """`--array auto` ranks by predicted cycles: here more than 4 rows buy nothing."""
    monkeypatch.setattr(fit_module, "DSP_BUDGET", {})  # all 28 DSPs: the ranking, not the budget
    board = get_profile("ulx3s-12f")
    asked = []

    def demand(r, c, too_big=()):
        asked.append((r, c))
        return Demand((MemoryNeed("w", 8, 1 << 20, True),) if (r, c) in too_big else (), multipliers=r * c)

    quick = lambda r, c: Demand((), multipliers=r * c)
    cost = lambda r, c: -min(r, 4) * c
    (rows, cols), fit = pick_array(demand, board, quick_of=quick, cost_of=cost)
    assert fit.fits and (rows, cols) == (4, 7) and asked == [(4, 7)]  # 4x7 and 2x14 tie: the squarer
    asked.clear()
    assert pick_array(lambda r, c: demand(r, c, too_big={(4, 7)}), board, quick_of=quick, cost_of=cost)[0] == (2, 14)
    assert asked == [(4, 7), (2, 14)]


def test_auto_array_is_the_fastest_accelerator_that_fits(tmp_path, capsys):
    """On the UP5K (8 DSPs, a sparse engine's multiplier beside the array) no other fitting
    array has fewer predicted cycles, and hw generate --array auto builds that one."""
    import numpy as np

    from boards.fit import accelerator_demand, array_for
    from hw.__main__ import main
    from hw.config import ArrayConfig
    from hw.cycles import predict
    from hw.schedule import schedule
    from tests.hw_helpers import random_plan

    plan = random_plan(np.random.default_rng(4))
    config, message = array_for(plan, "auto", "icebreaker")
    assert message.startswith("fits icebreaker")
    cycles = lambda r, c: (lambda m: (m["period_cycles"], m["total_cycles"]))(predict(schedule(plan, ArrayConfig(r, c))))
    fitting = [(r, c) for r, c in candidate_arrays() if r * c <= 7
               and check_fit(accelerator_demand(plan, r, c), get_profile("icebreaker")).fits]
    best = min(cycles(r, c) for r, c in fitting)
    assert cycles(config.rows, config.cols) == best
    assert config.pes == min(r * c for r, c in fitting if cycles(r, c) == best)
    assert array_for(plan, "3x2", "icebreaker") == (ArrayConfig(3, 2), None)  # as written, no fit check
    plan.save(tmp_path / "plan")
    assert main(["generate", "--plan", str(tmp_path / "plan"), "--array", "auto", "--board", "icebreaker",
                 "--out", str(tmp_path / "rtl")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"--array auto: {config} (fits icebreaker") and f"\narray {config}: " in out


def test_an_edge_sized_activation_buffer_takes_one_block_per_piece():
    """16x64x64 8-bit (the edge model's first conv output, 512 Kbit) in 8 banks: each bank is
    split into block-deep pieces (2048 x 8, one DP16KD as 2048 x 9), 32 blocks on the ECP5; the
    few rows of read margin beyond stay in LUT RAM."""
    from boards.fit import memories_of
    from hw.memories import ActivationBuffer

    mems = memories_of(ActivationBuffer(8, 16 * 64 * 64, 8, 17))
    assert len(mems) == 32 and {(m.width, m.depth, m.initialised, m.single_port) for m in mems} == {(8, 2048, False, False)}
    r = check_fit(Demand(mems, multipliers=0), get_profile("ulx3s-85f"))
    assert r.checks[0].need == 32 and set(r.placement.values()) == {"bram"}
    margin = memories_of(ActivationBuffer(8, 16 * 64 * 64 + 17, 8, 17))
    assert len(margin) == 40 and sorted({m.depth for m in margin}) == [3, 2048]
    r = check_fit(Demand(margin, multipliers=0), get_profile("ulx3s-85f"))
    assert r.checks[0].need == 32 and sum(p == "lut" for p in r.placement.values()) == 8


def test_sparse_lanes_count_in_the_demand():
    """Each sparse lane adds a multiplier, its logic and its memories (entries, row ends, rows and
    its copy of the input vector in 18-bit slices, from hw's inventory)."""
    import numpy as np

    from boards.fit import accelerator_demand
    from hw.sparse import LUTS_PER_SPARSE_LANE
    from tests.hw_helpers import random_plan

    plan = random_plan(np.random.default_rng(4), density=0.6)
    one, three = accelerator_demand(plan, 2, 2, lanes=1), accelerator_demand(plan, 2, 2, lanes=3)
    assert three.multipliers == one.multipliers + 2
    assert three.logic_luts == one.logic_luts + 2 * LUTS_PER_SPARSE_LANE
    lane_mems = {m.name for m in three.memories if m.name.startswith("sparse.lane")}
    assert lane_mems == {f"sparse.lane{l}.{n}" for l in range(3) for n in ("entries", "row_end", "rows", "copy_0")}
    copy = next(m for m in three.memories if m.name == "sparse.lane2.copy_0")
    assert not copy.initialised and not copy.single_port
    assert accelerator_demand(plan, 2, 2).multipliers == one.multipliers  # a small layer: one lane


def test_an_ice40_counts_logic_cells():
    """On an iCE40 the logic estimate is in cells, CELLS_PER_LUT per LUT4 (a flip-flop without a
    LUT takes a cell of its own); an ECP5 keeps LUT4s. 3,600 LUT4s fit the UP5K's 80% budget
    (4,224) as LUT4s, not as 4,464 cells."""
    from boards.fit import CELLS_PER_LUT

    demand = Demand((), multipliers=1, logic_luts=3600)
    up5k = check_fit(demand, get_profile("icebreaker"))
    logic = next(c for c in up5k.checks if c.resource.startswith("LUTs for logic"))
    assert logic.need == round(3600 * CELLS_PER_LUT["ice40"]) == 4464 and logic.unit == "logic cells"
    assert not up5k.fits
    ecp5 = next(c for c in check_fit(demand, get_profile("ulx3s-12f")).checks if c.resource.startswith("LUTs for logic"))
    assert ecp5.need == 3600 and ecp5.unit == "LUT4s"
