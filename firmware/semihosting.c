/* ARM semihosting calls: `bkpt 0xab` with the operation in r0 and its argument block in r1. */
#include "semihosting.h"

enum {
  SYS_OPEN = 0x01,
  SYS_CLOSE = 0x02,
  SYS_WRITE0 = 0x04,
  SYS_WRITE = 0x05,
  SYS_READ = 0x06,
  SYS_SEEK = 0x0a,
  SYS_FLEN = 0x0c,
  SYS_GET_CMDLINE = 0x15,
  SYS_EXIT = 0x18,
  SYS_EXIT_EXTENDED = 0x20,
};

/* Reason code of SYS_EXIT(_EXTENDED) for a program that ended by itself. */
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uintptr_t semihost(uintptr_t operation, const void *argument) {
  register uintptr_t r0 __asm__("r0") = operation;
  register const void *r1 __asm__("r1") = argument;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

static size_t length_of(const char *text) {
  size_t n = 0;
  while (text[n] != '\0') n++;
  return n;
}

int sh_open(const char *path, int mode) {
  const uintptr_t block[3] = {(uintptr_t)path, (uintptr_t)mode, length_of(path)};
  return (int)semihost(SYS_OPEN, block);
}

int sh_close(int handle) {
  const uintptr_t block[1] = {(uintptr_t)handle};
  return (int)semihost(SYS_CLOSE, block);
}

size_t sh_read(int handle, void *buffer, size_t size) {
  const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, size};
  return semihost(SYS_READ, block);
}

size_t sh_write(int handle, const void *buffer, size_t size) {
  const uintptr_t block[3] = {(uintptr_t)handle, (uintptr_t)buffer, size};
  return semihost(SYS_WRITE, block);
}

long sh_file_length(int handle) {
  const uintptr_t block[1] = {(uintptr_t)handle};
  return (long)semihost(SYS_FLEN, block);
}

int sh_seek(int handle, size_t position) {
  const uintptr_t block[2] = {(uintptr_t)handle, position};
  return (int)semihost(SYS_SEEK, block);
}

int sh_command_line(char *buffer, size_t size) {
  uintptr_t block[2] = {(uintptr_t)buffer, size};
  return (int)semihost(SYS_GET_CMDLINE, block);
}

void sh_print(const char *text) { semihost(SYS_WRITE0, text); }

void sh_exit(int status) {
  /* SYS_EXIT_EXTENDED carries the status; a host without it falls through to plain SYS_EXIT,
   * which can only say success or failure. */
  const uintptr_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uintptr_t)status};
  semihost(SYS_EXIT_EXTENDED, block);
  semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT : 0));
  for (;;) {
  }
}

char *sh_format_u64(char *end, uint64_t value) {
  do {
    *--end = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  return end;
}

void sh_print_value(const char *label, uint64_t value) {
  char text[24];
  text[sizeof text - 2] = '\n';
  text[sizeof text - 1] = '\0';
  sh_print(label);
  sh_print(sh_format_u64(&text[sizeof text - 2], value));
}
