// Package spool is a small durable queue on local files: records are
// appended to a segment file and are in the kernel's page cache when
// Append returns (so they survive the process being killed), and kept
// until they are acknowledged as delivered elsewhere. Gust's
// workers spool metering records until JetStream has them, so an answered
// call always has its record, even when NATS is down or the process dies.
//
// Records are newline-free byte strings (JSON, in Gust), one per line, in
// segment files named by the sequence number of their first record. The
// current segment is mapped into memory shared with its file, so an
// append is a copy and no system call: Append is on the path of every
// metered call, and a write(2) per record, made under the lock that
// orders the records, cost more than the rest of it and queued busy
// callers behind one another's system calls. Where the file cannot be
// mapped, records are written with write(2), one each. A mapped segment
// is its final size from the start, its unused end zero bytes, which
// reading drops (a segment left by a killed process ends so). A
// segment is deleted once every record in it is acknowledged and a
// retention time has passed: an acknowledgement can come before the
// receiver has the record safe (a broker killed with it still in memory),
// so recent records are kept to be sent again. Opening a spool returns
// every record still on disk, for redelivery: delivery is at least once,
// and receivers deduplicate.
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrFull is returned by Append when the spool holds its maximum bytes.
var ErrFull = errors.New("spool is full")

// Record is one spooled record with its sequence number.
type Record struct {
	Seq  uint64
	Data []byte
}

// Spool is a durable FIFO of records.
type Spool struct {
	dir        string
	maxBytes   int64
	segRecords uint64 // records per segment
	segBytes   int    // bytes mapped per segment (more for a larger record)
	noMap      bool   // write(2) every record, as where mapping fails
	// retain is how long a segment whose records are all acknowledged
	// stays on disk, to be sent again after a crash.
	retain time.Duration
	doneAt map[uint64]time.Time // first seq of a fully acknowledged segment → since when

	mu  sync.Mutex
	f   *os.File // current segment
	mem []byte   // f mapped, or nil: f is written to
	off int      // bytes of records in f
	// mapMu orders prefaulting the mapped segment (read) against
	// unmapping it (write); mapped is mem, under mapMu instead of mu.
	// prefaulting counts the prefault goroutines, which Close waits for.
	prefaulting sync.WaitGroup
	mapMu       sync.RWMutex
	mapped      []byte
	segs        []uint64 // first seq of each segment on disk, ascending
	next        uint64   // seq of the next record
	queue       []Record // appended, not yet taken
	bytes       int64    // bytes of unacknowledged records
	sizes       map[uint64]int64
	acked       map[uint64]bool // acknowledged seqs at or above low
	low         uint64          // every seq below low is acknowledged
	notify      chan struct{}
	closed      bool
	pending     []Record // records found on disk at open, not yet taken
}

// DefaultRetain is how long acknowledged records stay on disk: well past
// the moment a broker has them safe. Sending them again after a crash
// costs duplicates the receiver drops (Gust's billing store keeps a record
// once by its id), bounded by this minute of records.
const DefaultRetain = time.Minute

// Open opens (creating) the spool in dir. Records left by an earlier run
// are delivered first by Take.
func Open(dir string, maxBytes int64) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool directory: %w", err)
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, segRecords: 10000, segBytes: 4 << 20, retain: DefaultRetain, sizes: map[uint64]int64{},
		acked: map[uint64]bool{}, notify: make(chan struct{}, 1), doneAt: map[uint64]time.Time{}}
	names, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".seg"), 10, 64)
		if err != nil {
			continue
		}
		s.segs = append(s.segs, first)
	}
	sort.Slice(s.segs, func(i, j int) bool { return s.segs[i] < s.segs[j] })
	// Old segments are read back whole; their records get new sequence
	// numbers in a fresh segment-free range and the old files are removed
	// once every record read from them is acknowledged.
	for _, first := range s.segs {
		b, err := os.ReadFile(s.segPath(first))
		if err != nil {
			return nil, fmt.Errorf("read spool segment: %w", err)
		}
		seq := first
		for _, line := range bytes.Split(bytes.TrimRight(b, "\x00"), []byte{'\n'}) {
			if len(line) == 0 {
				continue
			}
			s.pending = append(s.pending, Record{Seq: seq, Data: line})
			s.sizes[seq] = int64(len(line))
			s.bytes += int64(len(line)) + 1
			seq++
		}
		s.next = max(s.next, seq)
	}
	if len(s.segs) > 0 {
		s.low = s.segs[0]
	}
	// A torn last line (the process died mid-write) is kept: it fails to
	// decode downstream and is dropped there, loudly.
	return s, nil
}

func (s *Spool) segPath(first uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.seg", first))
}

// Append adds one record (without newlines) durably to the current
// segment: it has reached the kernel when Append returns, so it survives
// the process being killed.
func (s *Spool) Append(data []byte) error {
	_, err := s.AppendSeq(data)
	return err
}

// AppendSeq is Append, returning the record's sequence number (for Acked).
func (s *Spool) AppendSeq(data []byte) (uint64, error) {
	// A record is one line: an empty one or one with a newline would not
	// read back as itself after a restart.
	if len(data) == 0 || bytes.IndexByte(data, '\n') >= 0 {
		return 0, errors.New("spool record is empty or contains a newline")
	}
	// The line is made before the lock: the queue keeps it for Take.
	buf := make([]byte, len(data)+1)
	copy(buf, data)
	buf[len(data)] = '\n'
	n := int64(len(buf))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("spool is closed")
	}
	if s.bytes+n > s.maxBytes {
		return 0, ErrFull
	}
	if s.f == nil || s.next-s.segs[len(s.segs)-1] >= s.segRecords || (s.mem != nil && s.off+len(buf) > len(s.mem)) {
		if err := s.rotateLocked(len(buf)); err != nil {
			return 0, err
		}
	}
	if s.mem != nil {
		copy(s.mem[s.off:], buf)
	} else if _, err := s.f.Write(buf); err != nil { // data and newline together
		return 0, fmt.Errorf("spool write: %w", err)
	}
	s.off += len(buf)
	seq := s.next
	s.next++
	s.bytes += n
	s.sizes[seq] = n - 1
	s.queue = append(s.queue, Record{Seq: seq, Data: buf[:n-1]})
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return seq, nil
}

// rotateLocked starts a new segment at the next record, which takes need
// bytes.
func (s *Spool) rotateLocked(need int) error {
	if err := s.closeSegmentLocked(); err != nil {
		return err
	}
	f, err := os.OpenFile(s.segPath(s.next), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("open spool segment: %w", err)
	}
	s.f, s.off = f, 0
	if !s.noMap {
		// Where it fails (no fallocate on this filesystem, no space for a
		// whole segment) records are written instead, and fail one by one
		// if the disk is full. The file's size may then be set already:
		// writes start at its beginning all the same, and its zero end is
		// cut at close.
		if mem, _ := mapSegment(f, max(s.segBytes, need)); mem != nil {
			s.mem = mem
			s.mapMu.Lock()
			s.mapped = mem
			s.mapMu.Unlock()
			s.prefaulting.Go(func() { s.prefault(mem) })
		}
	}
	s.segs = append(s.segs, s.next)
	if len(s.segs) == 1 {
		s.low = s.next
	}
	return nil
}

// prefaultChunk is how much of a segment prefault makes present at a
// time: about half a millisecond's work, the longest a rotation waits.
const prefaultChunk = 256 << 10

// prefault makes the pages of the mapped segment mem present and
// writable ahead of the appends, from its start, a chunk at a time, until
// it is done or mem is unmapped. Where the kernel cannot, the appends
// fault the pages in one by one as before.
func (s *Spool) prefault(mem []byte) {
	for off := 0; off < len(mem); off += prefaultChunk {
		s.mapMu.RLock()
		current := len(s.mapped) > 0 && &s.mapped[0] == &mem[0]
		var err error
		if current {
			err = prefault(mem[off:min(off+prefaultChunk, len(mem))])
		}
		s.mapMu.RUnlock()
		if !current || err != nil {
			return
		}
	}
}

// Notify is signalled after an Append.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Take returns up to n records not yet taken: first those found on disk at
// Open, then new ones in append order.
func (s *Spool) Take(n int) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Record
	if len(s.pending) > 0 {
		k := min(n, len(s.pending))
		out = append(out, s.pending[:k]...)
		s.pending = s.pending[k:]
		n -= k
	}
	if n > 0 && len(s.queue) > 0 {
		k := min(n, len(s.queue))
		out = append(out, s.queue[:k]...)
		s.queue = s.queue[k:]
	}
	return out
}

// Requeue puts records taken but not delivered back at the front, to be
// taken again.
func (s *Spool) Requeue(recs []Record) {
	if len(recs) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(append([]Record(nil), recs...), s.pending...)
}

// Ack marks records delivered; segments whose records are all delivered
// are deleted.
func (s *Spool) Ack(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range seqs {
		if q < s.low || s.acked[q] {
			continue
		}
		s.acked[q] = true
		s.bytes -= s.sizes[q] + 1
		delete(s.sizes, q)
	}
	for s.acked[s.low] {
		delete(s.acked, s.low)
		s.low++
	}
	// A segment that ends at or below low (and is not current) is fully
	// acknowledged: delete it once it has been so for the retention time.
	now := time.Now()
	for i := 0; i+1 < len(s.segs) && s.segs[i+1] <= s.low; i++ {
		if _, ok := s.doneAt[s.segs[i]]; !ok {
			s.doneAt[s.segs[i]] = now
		}
	}
	for len(s.segs) > 1 && s.segs[1] <= s.low && now.Sub(s.doneAt[s.segs[0]]) >= s.retain {
		if err := os.Remove(s.segPath(s.segs[0])); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove spool segment: %w", err)
		}
		delete(s.doneAt, s.segs[0])
		s.segs = s.segs[1:]
	}
	return nil
}

// Acked says whether record seq has been acknowledged.
func (s *Spool) Acked(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return seq < s.low || s.acked[seq]
}

// Len returns the number of records not yet acknowledged and their bytes.
func (s *Spool) Len() (records int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int(s.next - s.low - uint64(len(s.acked))), s.bytes
}

// Close closes the current segment. Unacknowledged records stay on disk.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	err := s.closeSegmentLocked()
	// Unmapped: a prefault still running ends at its next chunk (it takes
	// mapMu, never mu).
	s.prefaulting.Wait()
	return err
}

// closeSegmentLocked unmaps and closes the current segment, cut to the
// records it holds.
func (s *Spool) closeSegmentLocked() error {
	if s.f == nil {
		return nil
	}
	var errs []error
	if s.mem != nil {
		s.mapMu.Lock()
		s.mapped = nil
		errs = append(errs, unmapSegment(s.mem))
		s.mapMu.Unlock()
	}
	if st, err := s.f.Stat(); err == nil && st.Size() > int64(s.off) {
		errs = append(errs, s.f.Truncate(int64(s.off)))
	}
	errs = append(errs, s.f.Close())
	s.f, s.mem = nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close spool segment: %w", err)
	}
	return nil
}
