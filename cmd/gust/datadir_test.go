package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPrivateDataDir: a data directory left open by an earlier release is
// tightened on start: the directory and Gust's directories in it 0700,
// Gust's files without group or other bits; a file that is not Gust's is
// left as it was. What Gust creates there afterwards is private.
func TestPrivateDataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	mk := func(p string, mode os.FileMode, dir bool) {
		t.Helper()
		var err error
		if dir {
			err = os.MkdirAll(p, mode)
		} else {
			err = os.WriteFile(p, []byte("x\n"), mode)
		}
		if err == nil {
			err = os.Chmod(p, mode)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	mk(data, 0o755, true)
	mk(filepath.Join(data, "spool"), 0o755, true)
	mk(filepath.Join(data, "spool", "seg-1"), 0o644, false)
	mk(filepath.Join(data, "nats"), 0o750, true)
	mk(filepath.Join(data, "billing.db"), 0o644, false)
	mk(filepath.Join(data, "billing.db-wal"), 0o644, false)
	mk(filepath.Join(data, workerIDFile), 0o644, false)
	mk(filepath.Join(data, "notes.txt"), 0o644, false)

	if err := privateDataDir(data); err != nil {
		t.Fatal(err)
	}
	if _, err := localID(data, "billing-id"); err != nil {
		t.Fatal(err)
	}
	if err := createPrivate(filepath.Join(data, "new.db")); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{
		data: 0o700, filepath.Join(data, "spool"): 0o700, filepath.Join(data, "spool", "seg-1"): 0o600,
		filepath.Join(data, "nats"): 0o700, filepath.Join(data, "billing.db"): 0o600, filepath.Join(data, "billing.db-wal"): 0o600,
		filepath.Join(data, workerIDFile): 0o600, filepath.Join(data, "billing-id"): 0o600, filepath.Join(data, "new.db"): 0o600,
		filepath.Join(data, "notes.txt"): 0o644,
	} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}
