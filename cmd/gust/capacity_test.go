package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/gustfaas/gust/worker"
)

func TestHostMemory(t *testing.T) {
	p := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(p, []byte("MemFree:         1000 kB\nMemTotal:       16384000 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := hostMemory(p)
	if want := int64(16384000) << 10; err != nil || got != want {
		t.Errorf("hostMemory = %d, %v; want %d", got, err, want)
	}
	if err := os.WriteFile(p, []byte("MemFree: 1 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := hostMemory(p); err == nil {
		t.Error("hostMemory without MemTotal: no error")
	}
}

// TestCapacityFlags: --memory and --cpus set what the worker offers;
// unset, the host's memory less the reserve and its CPUs.
func TestCapacityFlags(t *testing.T) {
	var cfg worker.Config
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	apply := capacityFlags(fs, &cfg)
	if err := fs.Parse([]string{"--memory", "6Gi", "--cpus", "1.5"}); err != nil {
		t.Fatal(err)
	}
	if err := apply(); err != nil {
		t.Fatal(err)
	}
	defaultCapacity(&cfg)
	if cfg.MemoryBytes != 6<<30 || cfg.NanoCPUs != 1.5e9 {
		t.Errorf("capacity = %d bytes, %d nano CPUs; want 6Gi and 1.5e9", cfg.MemoryBytes, cfg.NanoCPUs)
	}

	for _, bad := range [][]string{{"--memory", "lots"}, {"--cpus", "-1"}} {
		var c worker.Config
		fs := flag.NewFlagSet("worker", flag.ContinueOnError)
		apply := capacityFlags(fs, &c)
		if err := fs.Parse(bad); err != nil {
			t.Fatal(err)
		}
		if err := apply(); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}

	var host worker.Config
	defaultCapacity(&host)
	if host.NanoCPUs <= 0 {
		t.Errorf("default CPUs = %d, want the host's", host.NanoCPUs)
	}
	if total, err := hostMemory("/proc/meminfo"); err == nil {
		if want := total - max(total/10, hostReserve); host.MemoryBytes != max(want, 0) {
			t.Errorf("default memory = %d, want %d (MemTotal %d less the reserve)", host.MemoryBytes, want, total)
		}
	}
}
