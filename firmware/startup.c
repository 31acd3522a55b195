/* Reset and exceptions for Cortex-M (ARMv7-M, ARMv8-M Mainline):
 * vector table, .data/.bss set-up, FPU (and MVE) enable, stack painting, and fault handlers
 * that report over semihosting and exit with a failure status instead of spinning forever.
 *
 * The linker script (firmware/ld/sections.ld) places the stack at the bottom of RAM, so an
 * overflow faults instead of silently corrupting data. */
#include <stdint.h>

#include "semihosting.h"
#include "startup.h"

/* Exit status of a firmware that took a fault (the runner names it). */
#define FAULT_EXIT_STATUS 70
#define STACK_PAINT 0x5AA5C33Cu

extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void SysTick_Handler(void);

static void unexpected_interrupt(void) {
  sh_print("firmware: unexpected interrupt\n");
  sh_exit(FAULT_EXIT_STATUS);
}

/* Cortex-M exceptions 1-15: reset, NMI, the four faults, SVC, debug monitor, PendSV, SysTick. */
__attribute__((section(".vectors"), used)) static void (*const vector_table[16])(void) = {
    (void (*)(void))__stack_top,
    Reset_Handler,
    unexpected_interrupt, /* NMI */
    Fault_Handler,        /* HardFault */
    Fault_Handler,        /* MemManage */
    Fault_Handler,        /* BusFault */
    Fault_Handler,        /* UsageFault */
    Fault_Handler,        /* SecureFault (ARMv8-M) */
    0,
    0,
    0,
    unexpected_interrupt, /* SVC */
    unexpected_interrupt, /* DebugMonitor */
    0,
    unexpected_interrupt, /* PendSV */
    SysTick_Handler,
};

#define SCB_VTOR (*(volatile uint32_t *)0xE000ED08u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define CPACR_CP10_CP11_FULL (0xFu << 20)

void Reset_Handler(void) {
  /* Exceptions use this image's vector table wherever it is linked: after a bootloader (MCUboot), the
   * core's table is still the bootloader's. */
  SCB_VTOR = (uint32_t)vector_table;
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  /* Full access to coprocessors 10 and 11: the FPU (and, on ARMv8.1-M, the vector extension). */
  SCB_CPACR |= CPACR_CP10_CP11_FULL;
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;) *dst++ = *src++;
  for (uint32_t *dst = __bss_start; dst < __bss_end;) *dst++ = 0;
  /* Paint the stack below this frame, so stack_peak_bytes() can find the deepest use. */
  uint32_t *sp;
  __asm__ volatile("mov %0, sp" : "=r"(sp));
  for (uint32_t *p = __stack_limit; p < sp - 16;) *p++ = STACK_PAINT;
  sh_exit(main());
}

/* TVM's LLVM objects carry ARM EHABI unwind tables that name this personality routine; nothing in
 * the firmware unwinds, so it only needs to exist (libgcc's would pull in the whole unwinder). */
void __aeabi_unwind_cpp_pr0(void) {}

size_t stack_peak_bytes(void) {
  const uint32_t *p = __stack_limit;
  while (p < __stack_top && *p == STACK_PAINT) p++;
  return (size_t)((const char *)__stack_top - (const char *)p);
}

size_t stack_budget_bytes(void) { return (size_t)((const char *)__stack_top - (const char *)__stack_limit); }

static void print_hex(const char *label, uint32_t value) {
  char text[] = "0x00000000\n";
  for (int i = 0; i < 8; i++) text[9 - i] = "0123456789abcdef"[(value >> (4 * i)) & 0xFu];
  sh_print(label);
  sh_print(text);
}

/* Called with the exception frame the core stacked: r0-r3, r12, lr, pc, xpsr. */
__attribute__((used)) static void report_fault(const uint32_t *frame) {
  sh_print("firmware: fault\n");
  print_hex("  pc   ", frame[6]);
  print_hex("  lr   ", frame[5]);
  print_hex("  cfsr ", SCB_CFSR);
  print_hex("  hfsr ", SCB_HFSR);
  sh_exit(FAULT_EXIT_STATUS);
}

__attribute__((naked)) void Fault_Handler(void) {
  /* The frame is on the stack that was in use: bit 2 of EXC_RETURN says which. */
  __asm__ volatile(
      "tst lr, #4\n"
      "ite eq\n"
      "mrseq r0, msp\n"
      "mrsne r0, psp\n"
      "b report_fault\n");
}
