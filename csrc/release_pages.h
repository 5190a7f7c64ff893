/* Dropping a loaded library's read-only file pages from memory.
 *
 * Only PT_LOAD segments that are readable and nothing else are advised:
 * RELRO data (relocated, then made read-only) lives in a writable segment and
 * holds private copies that must not be dropped. Unmodified file pages come
 * back from the file on the next read. Ranges are shrunk to whole pages so a
 * page shared with a neighbouring segment is never touched. */
#pragma once

#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* dl_iterate_phdr; also set on the command line by some builds */
#endif
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  const char* path;
  size_t released;
} AotiCyReleaseTarget;

static int aoti_cy_release_segments(struct dl_phdr_info* info, size_t size, void* data) {
  AotiCyReleaseTarget* target = (AotiCyReleaseTarget*)data;
  (void)size;
  if (info->dlpi_name == NULL || strcmp(info->dlpi_name, target->path) != 0) return 0;
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)* ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || ph->p_flags != PF_R) continue;
    uintptr_t start = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
    uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(page - 1);
    if (end > start && madvise((void*)start, end - start, MADV_DONTNEED) == 0) {
      target->released += end - start;
    }
  }
  return 1; /* found: stop iterating */
}

/* Bytes released from the library loaded from `path` (as given to dlopen). */
static inline size_t aoti_cy_release_file_pages(const char* path) {
  AotiCyReleaseTarget target = {path, 0};
  dl_iterate_phdr(aoti_cy_release_segments, &target);
  return target.released;
}
