"""The memory planner alone: liveness, reuse of freed blocks, in-place writes, kept values."""

from cnnc.passes.memory import ALIGN, Kernel, plan_memory


def overlaps(plan, a, b) -> bool:
    return plan.offsets[a] < plan.offsets[b] + plan.sizes[b] and plan.offsets[b] < plan.offsets[a] + plan.sizes[a]


def test_a_chain_needs_two_buffers_not_one_per_value():
    # x -> a -> b -> c -> d: each value dies as soon as the next is written.
    kernels = [Kernel(n, [i], [n]) for i, n in zip("xabc", "abcd")]
    sizes = {n: 1024 for n in "xabcd"}
    plan = plan_memory(kernels, sizes, inputs=["x"], keep={"d"})
    assert plan.unplanned_bytes == 5 * 1024
    assert plan.arena_bytes == 2 * 1024
    for first, second in zip("xabc", "abcd"):  # a kernel's input and output never share memory
        assert not overlaps(plan, first, second)


def test_a_value_read_later_stays_alive():
    # x -> a -> b; add(a, b) -> c: a must survive b's kernel.
    kernels = [Kernel("a", ["x"], ["a"]), Kernel("b", ["a"], ["b"]), Kernel("c", ["a", "b"], ["c"])]
    plan = plan_memory(kernels, {n: 64 for n in "xabc"}, inputs=["x"], keep={"c"})
    assert not overlaps(plan, "a", "b")
    assert not overlaps(plan, "a", "c") and not overlaps(plan, "b", "c")
    assert overlaps(plan, "x", "b")  # x died after a's kernel; b took its place


def test_in_place_takes_over_a_dying_input_only():
    kernels = [Kernel("a", ["x"], ["a"]), Kernel("b", ["a"], ["b"], in_place=("b", "a")), Kernel("c", ["a", "b"], ["c"])]
    plan = plan_memory(kernels, {n: 128 for n in "xabc"}, inputs=["x"], keep={"c"})
    assert "b" not in plan.shared  # a is still read by c: no in-place write
    kernels[2] = Kernel("c", ["b"], ["c"])
    plan = plan_memory(kernels, {n: 128 for n in "xabc"}, inputs=["x"], keep={"c"})
    assert plan.shared == {"b": "a"} and plan.offsets["b"] == plan.offsets["a"]


def test_kept_values_and_inputs_are_never_overwritten():
    kernels = [Kernel("a", ["x"], ["a"]), Kernel("b", ["a"], ["b"]), Kernel("c", ["b"], ["c"])]
    plan = plan_memory(kernels, {n: 256 for n in "xabc"}, inputs=["x"], keep={"a", "c"})
    assert not overlaps(plan, "a", "c") and not overlaps(plan, "a", "b")


def test_freed_blocks_merge_and_sizes_are_aligned():
    # Two small values die together; a value of their combined size fits where they were.
    kernels = [
        Kernel("a", ["x"], ["a"]),
        Kernel("b", ["x"], ["b"]),
        Kernel("k", ["a", "b", "x"], ["k"]),
        Kernel("big", ["k"], ["big"]),
    ]
    sizes = {"x": 100, "a": 100, "b": 100, "k": 10, "big": 2 * ALIGN * 2}
    plan = plan_memory(kernels, sizes, inputs=["x"], keep={"big"})
    assert all(offset % ALIGN == 0 for offset in plan.offsets.values())
    assert plan.offsets["big"] == 0  # x, a and b's merged space at the start of the arena
    assert plan.arena_bytes == 3 * 128 + ALIGN  # x, a, b, then k; big needed no new space
