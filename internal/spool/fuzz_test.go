package spool

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// FuzzSpool decodes a segment file left on disk by an earlier run (torn,
// empty lines, a zero end, any bytes) and appends one record after it. Open reads
// every non-empty line back as a record, in order, numbered from the
// segment's first sequence number, and counts them; a record Append
// accepts comes after them and, once the spool is closed and opened
// again, reads back byte for byte, as do the old ones (acknowledged
// records stay for the retention time).
func FuzzSpool(f *testing.F) {
	call := `c 3f2a9c0e11d84b7a {"callId":"3f2a9c0e11d84b7a","namespace":"openfaas-fn","function":"echo","version":1}`
	inst := `i inst-1 {"instance":"inst-1","namespace":"openfaas-fn","function":"echo"}`
	f.Add([]byte(""), uint16(0), []byte(call))
	f.Add([]byte(call+"\n"+inst+"\n"), uint16(0), []byte(inst))
	f.Add([]byte(call+"\n"+call[:20]), uint16(10000), []byte(call)) // torn last line
	f.Add([]byte("\n\n\nx\n\n"), uint16(7), []byte("y"))
	f.Add([]byte("a\r\nb\x00\n\xff\xfe"), uint16(65535), []byte("c \x00 \xff"))
	f.Add([]byte(call+"\n"+call[:20]+"\x00\x00\x00"), uint16(3), []byte(inst)) // a killed process's mapped segment
	f.Add([]byte(call+"\n"), uint16(1), []byte(""))
	f.Add([]byte(""), uint16(0), []byte("two\nlines"))
	f.Fuzz(func(t *testing.T, seg []byte, first uint16, rec []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d.seg", first)), seg, 0o600); err != nil {
			t.Fatal(err)
		}
		// Not a segment: skipped.
		if err := os.WriteFile(filepath.Join(dir, "notes.seg"), []byte("not\nrecords\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		var want [][]byte
		var wantBytes int64
		// Zero bytes at the end are a mapped segment's unused part.
		for _, line := range bytes.Split(bytes.TrimRight(seg, "\x00"), []byte{'\n'}) {
			if len(line) > 0 {
				want = append(want, line)
				wantBytes += int64(len(line)) + 1
			}
		}
		s, err := Open(dir, 1<<20)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if n, b := s.Len(); n != len(want) || b != wantBytes {
			t.Fatalf("Len() = %d, %d; the segment has %d records, %d bytes", n, b, len(want), wantBytes)
		}
		got := s.Take(len(want) + 10)
		if len(got) != len(want) {
			t.Fatalf("Take read %d records, the segment has %d", len(got), len(want))
		}
		var seqs []uint64
		for i, r := range got {
			if r.Seq != uint64(first)+uint64(i) || !bytes.Equal(r.Data, want[i]) {
				t.Fatalf("record %d = %d %q, want %d %q", i, r.Seq, r.Data, uint64(first)+uint64(i), want[i])
			}
			seqs = append(seqs, r.Seq)
		}
		appended := s.Append(rec) == nil
		if appended {
			want = append(want, rec)
			r := s.Take(10)
			if len(r) != 1 || !bytes.Equal(r[0].Data, rec) || (len(seqs) > 0 && r[0].Seq <= seqs[len(seqs)-1]) {
				t.Fatalf("Append(%q) then Take = %v", rec, r)
			}
			seqs = append(seqs, r[0].Seq)
		}
		if err := s.Ack(seqs...); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		if n, b := s.Len(); n != 0 || b != 0 {
			t.Fatalf("Len() after acknowledging everything = %d, %d", n, b)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(dir, 1<<20)
		if err != nil {
			t.Fatalf("Open again: %v", err)
		}
		defer s.Close()
		again := s.Take(len(want) + 10)
		if len(again) != len(want) {
			t.Fatalf("reopened spool read %d records, want %d (appended %q: %v)", len(again), len(want), rec, appended)
		}
		for i, r := range again {
			if !bytes.Equal(r.Data, want[i]) {
				t.Fatalf("reopened record %d = %q, want %q", i, r.Data, want[i])
			}
		}
	})
}
