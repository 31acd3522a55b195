/* ARM semihosting (Arm DUI 0471, "Semihosting for AArch32 and AArch64"): console output, host
 * files, the command line and the exit status, through the debugger or emulator (qemu
 * -semihosting-config enable=on,target=native). With no debugger attached a real board stops at
 * the first call: the harness firmware needs a probe or an emulator. */
#ifndef EDGEYARD_SEMIHOSTING_H
#define EDGEYARD_SEMIHOSTING_H

#include <stddef.h>
#include <stdint.h>

/* Modes of sh_open, as ISO C fopen() would say them. */
enum { SH_MODE_READ_BINARY = 1, SH_MODE_WRITE_BINARY = 5 };

/* A host file handle, or -1 when the host could not open the file. */
int sh_open(const char *path, int mode);
int sh_close(int handle);
/* 0 when all `size` bytes were read or written; otherwise how many were not. */
size_t sh_read(int handle, void *buffer, size_t size);
size_t sh_write(int handle, const void *buffer, size_t size);
/* The file's length in bytes, or -1. */
long sh_file_length(int handle);
/* 0 on success. */
int sh_seek(int handle, size_t position);
/* The program's command line as the host gives it ("image arg1 arg2 ..."); 0 on success. */
int sh_command_line(char *buffer, size_t size);
/* Text on the host's console. */
void sh_print(const char *text);
/* Ends the program: `status` becomes the host's (qemu's) exit status. */
__attribute__((noreturn)) void sh_exit(int status);

/* Decimal text of `value` ending at `end` (not NUL-terminated); returns where it starts. */
char *sh_format_u64(char *end, uint64_t value);
/* Prints `label` then `value` in decimal then a newline. */
void sh_print_value(const char *label, uint64_t value);

#endif
