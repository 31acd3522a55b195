/* Two empty functions the harness calls around its timed inferences. They do nothing on a board;
 * under qemu-system the instruction-classifying plugin (templates/qemu_insn_count.c.j2) finds their
 * addresses in the ELF's symbol table and counts instructions by class between the two calls
 * (toolchain/runners/qemu_system.py), so the per-class counts cover the inferences and not the
 * start-up, file I/O and validation runs around them. */
#ifndef EDGEYARD_MARKERS_H
#define EDGEYARD_MARKERS_H

void edgeyard_inferences_begin(void);
void edgeyard_inferences_end(void);

#endif
