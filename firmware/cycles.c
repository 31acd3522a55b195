#include "cycles.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)

#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SCB_ICSR_PENDSTSET (1u << 26)
#define SYSTICK_PERIOD (1u << 24)

static volatile uint32_t wraps;

void SysTick_Handler(void) { wraps++; }

void cycles_start(void) {
  SYST_CSR = 0;
  wraps = 0;
  SYST_RVR = SYSTICK_PERIOD - 1;
  SYST_CVR = 0; /* any write clears it; it reloads from SYST_RVR on the next tick */
  SYST_CSR = SYST_CSR_ENABLE | SYST_CSR_TICKINT | SYST_CSR_CLKSOURCE_CPU;
  while (SYST_CVR == 0) {
    /* until the first reload: cycles_now() reads 0 as the end of a counted period */
  }
}

uint64_t cycles_now(void) {
  uint32_t primask;
  __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
  uint32_t high = wraps;
  uint32_t low = SYST_CVR;
  /* A wrap that happened while interrupts were off has not been counted yet: count it, and
   * read the counter again in case `low` was read before the wrap. */
  if (SCB_ICSR & SCB_ICSR_PENDSTSET) {
    high++;
    low = SYST_CVR;
  }
  __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
  /* The wrap interrupt comes when the counter reaches 0, one tick before it reloads: a 0 is the
   * last tick of a period already counted in `high`. */
  if (low == 0) return (uint64_t)high * SYSTICK_PERIOD - 1;
  return (uint64_t)high * SYSTICK_PERIOD + (SYSTICK_PERIOD - 1 - low);
}
