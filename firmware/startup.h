/* What the startup code (startup.c) offers the program it starts. */
#ifndef EDGEYARD_STARTUP_H
#define EDGEYARD_STARTUP_H

#include <stddef.h>

/* The deepest the stack has been since reset, in bytes (the stack is painted at reset). */
size_t stack_peak_bytes(void);
/* The stack reserved by the linker script (the target's stack budget). */
size_t stack_budget_bytes(void);

#endif
