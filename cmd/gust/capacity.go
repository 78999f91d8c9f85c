package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/gustfaas/gust"
	"github.com/gustfaas/gust/worker"
)

// hostReserve is the memory a worker keeps back from what it offers by
// default: for the host, Docker and Gust itself. A tenth of the host's
// memory, and never less than this.
const hostReserve = 512 << 20

// capacityFlags registers --memory and --cpus, the capacity a worker
// advertises, and returns the function that sets them in cfg; left
// unset, defaultCapacity fills them from the host.
func capacityFlags(fs *flag.FlagSet, cfg *worker.Config) func() error {
	mem := fs.String("memory", envOr("GUST_WORKER_MEMORY", ""), "memory this worker offers to functions, e.g. 8Gi (default: the host's memory less a tenth, at least 512Mi) ($GUST_WORKER_MEMORY)")
	cpus := fs.Float64("cpus", 0, "CPUs this worker offers to functions (default: every CPU of the host)")
	return func() error {
		if *mem != "" {
			b, err := gust.ParseMemory(*mem)
			if err != nil || b <= 0 {
				return usagef("--memory %q: want a memory quantity such as 8Gi", *mem)
			}
			cfg.MemoryBytes = b
		}
		if *cpus < 0 {
			return usagef("--cpus %v: want a positive number", *cpus)
		}
		cfg.NanoCPUs = int64(*cpus * 1e9)
		return nil
	}
}

// defaultCapacity fills what cfg leaves unset of the worker's capacity
// from the host: its memory (MemTotal of /proc/meminfo) less the reserve,
// and its CPUs. Where the host's memory cannot be read, the worker
// advertises none, and the scheduler places on it without a bound.
func defaultCapacity(cfg *worker.Config) {
	if cfg.NanoCPUs == 0 {
		cfg.NanoCPUs = int64(runtime.NumCPU()) * 1e9
	}
	if cfg.MemoryBytes == 0 {
		if total, err := hostMemory("/proc/meminfo"); err == nil {
			cfg.MemoryBytes = max(total-max(total/10, hostReserve), 0)
		}
	}
}

// hostMemory reads MemTotal from a meminfo file.
func hostMemory(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemTotal %q: %w", path, rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no MemTotal", path)
}
