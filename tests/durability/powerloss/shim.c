/* Power-loss disk model, LD_PRELOADed into a real `croupier ledger serve` process.
 *
 * It records what a power cut would leave on disk: for each file of one watched directory, the
 * content as of that file's last successful fsync/fdatasync ("durable shadow"), and the directory's
 * entries as of its last directory fsync (a newly created file survives only if the directory was
 * fsynced after its creation). Data written but never fsynced is lost. After kill -9, the test
 * rebuilds the directory from SHADOW/manifest: one line "name<TAB>shadow-file" per durable name.
 *
 * Environment:
 *   CROUPIER_POWERLOSS_DIR      the watched directory (absolute, resolved); unset = pass-through
 *   CROUPIER_POWERLOSS_SHADOW   where shadows, manifest and synclog are written (must exist)
 *   CROUPIER_POWERLOSS_MODE     "honest" (default) or "drop_last": the most recent file fsync is
 *                               held in memory and only made durable by the next one, so a power
 *                               cut loses exactly the last fsync (a disk that lies once)
 *   CROUPIER_POWERLOSS_FULL_FLAG while this path exists, writes to watched files fail ENOSPC (after
 *                               as many successful writes as the number the file holds, if any)
 *
 * How it sees writes: write/pwrite/pwrite64/writev/pwritev and ftruncate are wrapped; each marks the
 * 4 KiB blocks it touched as dirty (per inode, so every fd of a file counts). An fsync copies the
 * dirty blocks from the live file into the shadow and applies size changes. The real fsync is not
 * called: the shadow is the simulated disk. "-shm" files are not modelled (SQLite rebuilds the WAL
 * index after a crash); shared writable mmaps and renames in the watched directory abort the
 * process, because the model could not see them. sync_file_range, sync and syncfs are not used by
 * SQLite (not imported by libsqlite3) and, not being fsync barriers, make nothing durable here.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define BLOCK 4096
#define ENTRIES_MAX 64 /* files ever seen in the watched directory by one process */

struct entry {
    int live;              /* 0 once unlinked: its inode number may be reused */
    dev_t dev;
    ino_t ino;
    char shadow[PATH_MAX]; /* absolute path of the durable copy */
    unsigned char *dirty;  /* one bit per BLOCK written since the last fsync */
    size_t dirty_bits;
    off_t min_size;        /* smallest size since the last fsync (after shrinking), -1: none */
};

struct snapshot {          /* the content of one file at one fsync, ready to be made durable */
    struct entry *e;
    off_t min_size, size;
    size_t count, cap;
    off_t *offsets;
    char *blocks;          /* count * BLOCK bytes */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct entry entries[ENTRIES_MAX];
static int entry_count, drop_last, synclog_fd = -1;
static char watched[PATH_MAX], shadow_dir[PATH_MAX], full_flag[PATH_MAX];
static struct snapshot held;  /* drop_last: the most recent fsync, not yet durable */

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_unlink)(const char *);
static int (*real_rename)(const char *, const char *);
static void *(*real_mmap)(void *, size_t, int, int, int, off_t);
static void *(*real_mmap64)(void *, size_t, int, int, int, off_t);

static void die(const char *why, const char *what) {
    char msg[PATH_MAX + 200];
    int n = snprintf(msg, sizeof msg, "powerloss shim: %s: %s (errno %d)\n", why, what, errno);
    if (real_write && n > 0) real_write(2, msg, (size_t)n);
    abort();
}

static void put_all(int fd, const char *buf, size_t n, off_t off) {
    while (n > 0) {
        ssize_t w = real_pwrite(fd, buf, n, off);
        if (w <= 0) die("cannot write shadow", shadow_dir);
        buf += w; n -= (size_t)w; off += w;
    }
}

static struct entry *find(dev_t dev, ino_t ino) {
    for (int i = 0; i < entry_count; i++)
        if (entries[i].live && entries[i].dev == dev && entries[i].ino == ino) return &entries[i];
    return NULL;
}

/* A new entry whose durable content is `from` (a file to copy), or empty when from is NULL. */
static struct entry *add(const struct stat *st, const char *name, const char *from) {
    if (entry_count == ENTRIES_MAX) die("too many files", name);
    struct entry *e = &entries[entry_count];
    snprintf(e->shadow, sizeof e->shadow, "%s/%d.%s", shadow_dir, entry_count, name);
    int out = open(e->shadow, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) die("cannot create shadow", e->shadow);
    if (from) {
        int in = open(from, O_RDONLY | O_CLOEXEC);
        char buf[BLOCK];
        ssize_t n;
        off_t off = 0;
        if (in < 0) die("cannot read", from);
        while ((n = read(in, buf, sizeof buf)) > 0) { put_all(out, buf, (size_t)n, off); off += n; }
        close(in);
    }
    close(out);
    e->live = 1; e->dev = st->st_dev; e->ino = st->st_ino; e->min_size = -1;
    entry_count++;
    return e;
}

static int modelled(const char *name) {
    size_t n = strlen(name);
    return !(n >= 4 && strcmp(name + n - 4, "-shm") == 0);
}

/* The entry of a watched file open as fd, created on first sight; NULL for any other fd. */
static struct entry *classify(int fd) {
    struct stat st;
    char link[64], path[PATH_MAX];
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return NULL;
    struct entry *e = find(st.st_dev, st.st_ino);
    if (e) return e;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return NULL;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash || (size_t)(slash - path) != strlen(watched) || strncmp(path, watched, (size_t)(slash - path)) != 0)
        return NULL;
    if (!modelled(slash + 1)) return NULL;
    return add(&st, slash + 1, NULL);  /* first written after start: nothing of it is durable yet */
}

static void mark(struct entry *e, off_t off, size_t n) {
    if (n == 0) return;
    size_t first = (size_t)off / BLOCK, last = ((size_t)off + n - 1) / BLOCK;
    if (last >= e->dirty_bits) {
        size_t bits = (last + 1) * 2, old = (e->dirty_bits + 7) / 8, now = (bits + 7) / 8;
        e->dirty = realloc(e->dirty, now);
        if (!e->dirty) die("out of memory", e->shadow);
        memset(e->dirty + old, 0, now - old);
        e->dirty_bits = bits;
    }
    for (size_t b = first; b <= last; b++) e->dirty[b / 8] |= (unsigned char)(1u << (b % 8));
}

static void append_block(struct snapshot *s, off_t off, const char *data) {
    if (s->count == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->offsets = realloc(s->offsets, s->cap * sizeof *s->offsets);
        s->blocks = realloc(s->blocks, s->cap * BLOCK);
        if (!s->offsets || !s->blocks) die("out of memory", "snapshot");
    }
    s->offsets[s->count] = off;
    memcpy(s->blocks + s->count * BLOCK, data, BLOCK);
    s->count++;
}

/* Take the file's content as of now (its dirty blocks and size) and reset its dirty set. */
static void take(struct entry *e, int fd, struct snapshot *s) {
    char link[64], buf[BLOCK];
    struct stat st;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int in = open(link, O_RDONLY | O_CLOEXEC);
    if (in < 0 || fstat(in, &st) != 0) die("cannot reopen", link);
    s->e = e; s->min_size = e->min_size; s->size = st.st_size; s->count = 0;
    for (size_t b = 0; b < e->dirty_bits && (off_t)(b * BLOCK) < st.st_size; b++) {
        if (!(e->dirty[b / 8] & (1u << (b % 8)))) continue;
        memset(buf, 0, sizeof buf);
        if (pread(in, buf, BLOCK, (off_t)(b * BLOCK)) < 0) die("cannot read", link);
        append_block(s, (off_t)(b * BLOCK), buf);
    }
    close(in);
    if (e->dirty) memset(e->dirty, 0, (e->dirty_bits + 7) / 8);
    e->min_size = -1;
}

static void make_durable(const struct snapshot *s) {
    int out = open(s->e->shadow, O_WRONLY | O_CLOEXEC);
    if (out < 0) die("cannot open shadow", s->e->shadow);
    if ((s->min_size >= 0 && real_ftruncate(out, s->min_size) != 0) || real_ftruncate(out, s->size) != 0)
        die("cannot size shadow", s->e->shadow);
    for (size_t i = 0; i < s->count; i++) {
        off_t left = s->size - s->offsets[i];
        put_all(out, s->blocks + i * BLOCK, left < BLOCK ? (size_t)left : BLOCK, s->offsets[i]);
    }
    close(out);
}

static void log_sync(const char *name) {
    char line[PATH_MAX + 2];
    int n = snprintf(line, sizeof line, "%s\n", name);
    if (real_write(synclog_fd, line, (size_t)n) != n) die("cannot write synclog", shadow_dir);
}

/* The directory's durable entries := its entries now (what a directory fsync persists). */
static void write_manifest(void) {
    char tmp[PATH_MAX], final[PATH_MAX], path[PATH_MAX], line[PATH_MAX * 2];
    snprintf(tmp, sizeof tmp, "%s/manifest.tmp", shadow_dir);
    snprintf(final, sizeof final, "%s/manifest", shadow_dir);
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    DIR *dir = opendir(watched);
    if (out < 0 || !dir) die("cannot write manifest", watched);
    off_t off = 0;
    for (struct dirent *d; (d = readdir(dir)) != NULL;) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", watched, d->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || !modelled(d->d_name)) continue;
        struct entry *e = find(st.st_dev, st.st_ino);
        if (!e) e = add(&st, d->d_name, NULL);  /* created, never written: durable as empty */
        int n = snprintf(line, sizeof line, "%s\t%s\n", d->d_name, strrchr(e->shadow, '/') + 1);
        put_all(out, line, (size_t)n, off);
        off += n;
    }
    closedir(dir);
    close(out);
    if (real_rename(tmp, final) != 0) die("cannot publish manifest", final);
}

#define RESOLVE(name) real_##name = dlsym(RTLD_NEXT, #name)

static void setup(void) {
    RESOLVE(mmap); RESOLVE(mmap64);  /* first: resolving may allocate, and malloc may mmap */
    RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev); RESOLVE(pwritev);
    RESOLVE(ftruncate); RESOLVE(ftruncate64); RESOLVE(fsync); RESOLVE(fdatasync);
    RESOLVE(unlink); RESOLVE(rename);
    const char *dir = getenv("CROUPIER_POWERLOSS_DIR"), *shadow = getenv("CROUPIER_POWERLOSS_SHADOW");
    const char *mode = getenv("CROUPIER_POWERLOSS_MODE"), *flag = getenv("CROUPIER_POWERLOSS_FULL_FLAG");
    if (!dir || !shadow) return;
    if (strlen(dir) > PATH_MAX / 4 || strlen(shadow) > PATH_MAX / 4) die("path too long", dir);
    snprintf(shadow_dir, sizeof shadow_dir, "%s", shadow);
    snprintf(full_flag, sizeof full_flag, "%s", flag ? flag : "");
    drop_last = mode && strcmp(mode, "drop_last") == 0;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/synclog", shadow_dir);
    synclog_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (synclog_fd < 0) die("cannot open synclog", path);
    /* Whatever is in the directory at start is durable: the test starts from a settled state. */
    DIR *d = opendir(dir);
    if (!d) die("cannot open watched directory", dir);
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && modelled(de->d_name)) add(&st, de->d_name, path);
    }
    closedir(d);
    snprintf(watched, sizeof watched, "%s", dir);  /* set last: the shim is active from here on */
    write_manifest();
}

__attribute__((constructor)) static void init(void) { pthread_once(&once, setup); }

/* While the flag file exists the disk is full; it may hold a count of writes that still succeed
 * (each one decrements it), so that a commit can fail half-way through writing its frames. */
static int disk_full(void) {
    char buf[32] = {0};
    int fd = full_flag[0] ? open(full_flag, O_RDWR | O_CLOEXEC) : -1;
    if (fd < 0) return 0;
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    long left = n > 0 ? strtol(buf, NULL, 10) : 0;
    if (left > 0) {
        int len = snprintf(buf, sizeof buf, "%ld", left - 1);
        if (real_ftruncate(fd, 0) != 0 || real_pwrite(fd, buf, (size_t)len, 0) != len) die("cannot update", full_flag);
    }
    close(fd);
    return left <= 0;
}

/* Every write wrapper: pass through unless fd is a watched file; then fail or mark blocks dirty. */
#define WRAP_WRITE(call, offset_expr)                                        \
    pthread_once(&once, setup);                                              \
    if (!watched[0]) return call;                                            \
    pthread_mutex_lock(&lock);                                               \
    struct entry *e = classify(fd);                                          \
    if (!e) { pthread_mutex_unlock(&lock); return call; }                    \
    if (disk_full()) { pthread_mutex_unlock(&lock); errno = ENOSPC; return -1; } \
    off_t at = (offset_expr);                                                \
    ssize_t r = call;                                                        \
    int saved = errno;                                                       \
    if (r > 0) mark(e, at, (size_t)r);                                       \
    pthread_mutex_unlock(&lock);                                             \
    errno = saved;                                                           \
    return r;

static off_t position(int fd) {
    if (fcntl(fd, F_GETFL) & O_APPEND) {
        struct stat st;
        return fstat(fd, &st) == 0 ? st.st_size : 0;
    }
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buf, size_t n) { WRAP_WRITE(real_write(fd, buf, n), position(fd)) }
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { WRAP_WRITE(real_pwrite(fd, buf, n, off), off) }
ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { WRAP_WRITE(real_pwrite64(fd, buf, n, off), off) }
ssize_t writev(int fd, const struct iovec *v, int c) { WRAP_WRITE(real_writev(fd, v, c), position(fd)) }
ssize_t pwritev(int fd, const struct iovec *v, int c, off_t off) { WRAP_WRITE(real_pwritev(fd, v, c, off), off) }

static int truncate_fd(int fd, off_t size, int (*real)(int, off_t)) {
    pthread_once(&once, setup);
    if (!watched[0]) return real(fd, size);
    pthread_mutex_lock(&lock);
    struct entry *e = classify(fd);
    int r = real(fd, size), saved = errno;
    if (r == 0 && e && (e->min_size < 0 || size < e->min_size)) e->min_size = size;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return r;
}

int ftruncate(int fd, off_t size) { return truncate_fd(fd, size, real_ftruncate); }
int ftruncate64(int fd, off_t size) { return truncate_fd(fd, size, real_ftruncate64); }

static int is_watched_dir(int fd) {
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strcmp(path, watched) == 0;
}

static int sync_fd(int fd, int (*real)(int)) {
    struct stat st;
    pthread_once(&once, setup);
    if (!watched[0] || fstat(fd, &st) != 0) return real(fd);
    pthread_mutex_lock(&lock);
    if (S_ISDIR(st.st_mode) && is_watched_dir(fd)) {
        write_manifest();
        log_sync(".");
        pthread_mutex_unlock(&lock);
        return 0;
    }
    struct entry *e = classify(fd);
    if (!e) { pthread_mutex_unlock(&lock); return real(fd); }
    static struct snapshot now;
    take(e, fd, &now);
    if (!drop_last) {
        make_durable(&now);
    } else {  /* the previous fsync becomes durable; this one is held until the next */
        if (held.e) make_durable(&held);
        struct snapshot swap = held;
        held = now;
        now = swap;
    }
    log_sync(strrchr(e->shadow, '/') + 1);
    pthread_mutex_unlock(&lock);
    return 0;
}

int fsync(int fd) { return sync_fd(fd, real_fsync); }
int fdatasync(int fd) { return sync_fd(fd, real_fdatasync); }

static int in_watched(const char *path) {
    char resolved[PATH_MAX], dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else snprintf(dir, sizeof dir, ".");
    return watched[0] && realpath(slash == dir ? "/" : dir, resolved) && strcmp(resolved, watched) == 0;
}

int unlink(const char *path) {
    struct stat st;
    pthread_once(&once, setup);
    pthread_mutex_lock(&lock);
    if (in_watched(path) && stat(path, &st) == 0) {
        struct entry *e = find(st.st_dev, st.st_ino);
        if (e) e->live = 0;  /* the durable name stays until the next directory fsync */
    }
    int r = real_unlink(path), saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return r;
}

int rename(const char *from, const char *to) {
    pthread_once(&once, setup);
    if (in_watched(from) || in_watched(to)) die("rename in the watched directory is not modelled", to);
    return real_rename(from, to);
}

static void *map_fd(void *a, size_t n, int prot, int flags, int fd, off_t off,
                    void *(*real)(void *, size_t, int, int, int, off_t)) {
    if (!real) return (void *)syscall(SYS_mmap, a, n, prot, flags, fd, off);  /* during set-up */
    if (fd >= 0 && (prot & PROT_WRITE) && (flags & MAP_SHARED)) {
        pthread_once(&once, setup);
        pthread_mutex_lock(&lock);
        struct entry *e = watched[0] ? classify(fd) : NULL;
        pthread_mutex_unlock(&lock);
        if (e) die("writable shared mmap of a watched file is not modelled", e->shadow);
    }
    return real(a, n, prot, flags, fd, off);
}

void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) { return map_fd(a, n, prot, flags, fd, off, real_mmap); }
void *mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off) { return map_fd(a, n, prot, flags, fd, off, real_mmap64); }
