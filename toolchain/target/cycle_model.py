"""Estimated cycles from instruction counts by class: one table of cycles per class for each core.

The qemu-system runner counts the instructions of the timed inferences by class (the plugin in
templates/qemu_insn_count.c.j2 classifies each instruction from its disassembly); the estimate is
sum(count x cycles) over the classes, plus the per-register cost of load/store-multiple transfers.
It is an estimate, labelled so everywhere: qemu models no timing at all.

Each class has three figures, best, typical and worst cycles per instruction, from the manuals;
the estimate uses the typical ones, and the best and worst give the range the true count at zero
wait states lies in as far as the table can say. What no figure here models: flash wait states
(STM32L4R5 at 120 MHz: 5, mostly hidden by the ART accelerator's prefetch and cache), pipeline
stalls between dependent instructions beyond the table's figures, branch prediction and taken vs
untaken branches (a class-wide average is charged), dual issue (Cortex-M7) and beat overlap
between vector instructions (Cortex-M55).
"""

from dataclasses import dataclass

# The classes the plugin counts, in its output order; every executed instruction is in exactly one.
CLASSES = ("load", "store", "load_store_multiple", "multiply", "divide", "branch", "fp", "mve", "alu")


@dataclass(frozen=True)
class CycleModel:
    core: str
    cycles: dict[str, tuple[float, float, float]]  # per instruction of each class: best, typical, worst
    cycles_per_register: float  # load/store multiple (LDM, STM, PUSH, POP, LDRD, STRD, VLDM, ...): per register moved
    source: str
    accuracy: str  # why the estimate can be off for this core, one clause


_M4_SOURCE = ("Arm Cortex-M4 Technical Reference Manual r0p1 (DDI 0439), table 3-1 'Processor instruction set "
              "summary' and table 7-1 'FPU instruction set' timings")

MODELS = {
    # M4, table 3-1: data processing 1; LDR/STR 2, 1 when pipelined behind a neighbouring load or store;
    # LDM/STM/PUSH/POP/LDRD/STRD 1+N; MUL/MLA/MLS/SMULL/UMULL/SMLAL/UMLAL and the DSP MACs (SMLAD, SMULxy, ...) 1;
    # SDIV/UDIV 2-12 (table 7-1: VDIV, VSQRT 14); B/BL/BX/CBZ 1+P with P 1-3 when taken, 1 when an untaken
    # conditional; table 7-1: VADD/VMUL/VMOV 1, VMLA/VFMA 3.
    "cortex-m4": CycleModel(
        "cortex-m4",
        {"load": (1, 2, 2), "store": (1, 2, 2), "load_store_multiple": (1, 1, 1), "multiply": (1, 1, 1),
         "divide": (2, 7, 14), "branch": (1, 2, 4), "fp": (1, 1, 3), "mve": (1, 1, 1), "alu": (1, 1, 1)},
        1, _M4_SOURCE,
        "loads and stores that pipeline behind a neighbour take 1 cycle, not the 2 charged, and branches 1 to 4, "
        "not the 2 charged; flash wait states the ART cache does not hide add to the true count",
    ),
    # M7: the TRM publishes no per-instruction cycle table. It is a 6-stage in-order dual-issue core: two
    # instructions (e.g. an ALU and a load) can retire per cycle, loads from TCM or cache take one cycle, the
    # 64-bit load/store unit moves two registers per cycle, and a predicted branch costs about one.
    "cortex-m7": CycleModel(
        "cortex-m7",
        {"load": (0.5, 1, 2), "store": (0.5, 1, 1), "load_store_multiple": (1, 1, 1), "multiply": (0.5, 1, 1),
         "divide": (2, 7, 14), "branch": (0.5, 1, 8), "fp": (0.5, 1, 3), "mve": (1, 1, 1), "alu": (0.5, 1, 1)},
        0.5,
        "Arm Cortex-M7 Technical Reference Manual r1p2 (DDI 0489), chapter 1 'Processor features' (dual issue, "
        "64-bit load/store unit, branch prediction); no per-instruction table is published",
        "dual issue is not modelled, so the typical figure is single issue and the board may need as few as half "
        "these cycles; mispredicted branches, cache misses and flash wait states add to the true count",
    ),
    # M55: a 4-stage scalar pipeline (loads 1 cycle from TCM) and a dual-beat Helium unit: a 128-bit vector
    # instruction takes two cycles, and overlapping beats of independent vector instructions can hide one.
    "cortex-m55": CycleModel(
        "cortex-m55",
        {"load": (1, 1, 2), "store": (1, 1, 1), "load_store_multiple": (1, 1, 1), "multiply": (1, 1, 1),
         "divide": (2, 7, 14), "branch": (1, 2, 4), "fp": (1, 1, 3), "mve": (1, 2, 2), "alu": (1, 1, 1)},
        1,
        "Arm Cortex-M55 Technical Reference Manual r1p1 (101051), 'Helium beat-wise execution' (dual-beat MVE) "
        "and the processor's pipeline description",
        "overlapping beats of independent vector instructions can halve their 2 cycles, and branches take 1 to 4, "
        "not the 2 charged; TCM is assumed, so memory wait states add to the true count",
    ),
}


def model_for(cpu: str) -> CycleModel | None:
    """The cycle model of a target's core (its profile's `cpu`), or None where none is published here."""
    return MODELS.get(cpu)


def estimate(model: CycleModel, classes: dict[str, float], registers_moved: float) -> tuple[int, int, int]:
    """Best, typical and worst cycles: each class's count times its cycles, plus the registers moved by
    load/store multiples."""
    moved = registers_moved * model.cycles_per_register
    return tuple(round(sum(count * model.cycles[name][case] for name, count in classes.items()) + moved)
                 for case in range(3))
