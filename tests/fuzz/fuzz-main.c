/* Runs a fuzz target over files given on the command line (or every file in the directories given), so
 * the seed corpus is replayed by the normal test suite with any compiler; libFuzzer builds (-Dfuzz=true,
 * clang) use their own main instead. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_FILE_MAX (1024 * 1024)

static int fuzz_run_file(const char *path)
{
        static uint8_t buf[FUZZ_FILE_MAX];
        FILE *f = fopen(path, "rb");
        size_t n;

        if (!f) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -1;
        }
        n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        (void)LLVMFuzzerTestOneInput(buf, n);
        return 0;
}

int main(int argc, char **argv)
{
        int runs = 0, failed = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                DIR *d;
                struct dirent *e;

                if (stat(argv[i], &st) < 0 || !S_ISDIR(st.st_mode)) {
                        failed |= fuzz_run_file(argv[i]) < 0;
                        runs++;
                        continue;
                }
                d = opendir(argv[i]);
                if (!d) {
                        failed = 1;
                        continue;
                }
                while ((e = readdir(d))) {
                        char path[4096];

                        if (e->d_name[0] == '.')
                                continue;
                        if (snprintf(path, sizeof(path), "%s/%s", argv[i], e->d_name) >= (int)sizeof(path))
                                continue;
                        failed |= fuzz_run_file(path) < 0;
                        runs++;
                }
                closedir(d);
        }
        printf("%d inputs run\n", runs);
        return failed || runs == 0 ? 1 : 0;
}
