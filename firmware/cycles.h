/* A 64-bit tick counter from SysTick, the one timer every Cortex-M has.
 *
 * SysTick runs from the processor clock, so on a board a tick is a cycle. Under qemu with
 * `-icount shift=0` every instruction takes 1 ns of virtual time and the emulated SysTick runs
 * at the board model's fixed clock (25 MHz on mps2/mps3), so a tick is 40 instructions: the
 * build converts with the emulator's systick_hz from the target file. */
#ifndef EDGEYARD_CYCLES_H
#define EDGEYARD_CYCLES_H

#include <stdint.h>

/* Starts SysTick at its full 24-bit period; the wrap interrupt extends the count to 64 bits. */
void cycles_start(void);
/* Ticks since cycles_start(). */
uint64_t cycles_now(void);

#endif
