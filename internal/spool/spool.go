// Package spool is a small durable queue on local files: records are
// appended with one write each (so they survive the process being killed)
// and kept until they are acknowledged as delivered elsewhere. Gust's
// workers spool metering records until JetStream has them, so an answered
// call always has its record, even when NATS is down or the process dies.
//
// Records are newline-free byte strings (JSON, in Gust), one per line, in
// segment files named by the sequence number of their first record. A
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
	// retain is how long a segment whose records are all acknowledged
	// stays on disk, to be sent again after a crash.
	retain time.Duration
	doneAt map[uint64]time.Time // first seq of a fully acknowledged segment → since when

	mu      sync.Mutex
	f       *os.File // current segment
	segs    []uint64 // first seq of each segment on disk, ascending
	next    uint64   // seq of the next record
	queue   []Record // appended, not yet taken
	bytes   int64    // bytes of unacknowledged records
	sizes   map[uint64]int64
	acked   map[uint64]bool // acknowledged seqs at or above low
	low     uint64          // every seq below low is acknowledged
	notify  chan struct{}
	closed  bool
	pending []Record // records found on disk at open, not yet taken
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
	s := &Spool{dir: dir, maxBytes: maxBytes, segRecords: 10000, retain: DefaultRetain, sizes: map[uint64]int64{},
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
		for _, line := range bytes.Split(b, []byte{'\n'}) {
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

// Append writes one record (without newlines) durably to the current
// segment: it has reached the kernel when Append returns, so it survives
// the process being killed.
func (s *Spool) Append(data []byte) error {
	_, err := s.AppendSeq(data)
	return err
}

// AppendSeq is Append, returning the record's sequence number (for Acked).
func (s *Spool) AppendSeq(data []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errors.New("spool is closed")
	}
	// A record is one line: an empty one or one with a newline would not
	// read back as itself after a restart.
	if len(data) == 0 || bytes.IndexByte(data, '\n') >= 0 {
		return 0, errors.New("spool record is empty or contains a newline")
	}
	n := int64(len(data)) + 1
	if s.bytes+n > s.maxBytes {
		return 0, ErrFull
	}
	if s.f == nil || s.next-s.segs[len(s.segs)-1] >= s.segRecords {
		if err := s.rotateLocked(); err != nil {
			return 0, err
		}
	}
	// One write per record: data and newline together.
	buf := make([]byte, 0, n)
	buf = append(append(buf, data...), '\n')
	if _, err := s.f.Write(buf); err != nil {
		return 0, fmt.Errorf("spool write: %w", err)
	}
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

func (s *Spool) rotateLocked() error {
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			return fmt.Errorf("close spool segment: %w", err)
		}
	}
	f, err := os.OpenFile(s.segPath(s.next), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("open spool segment: %w", err)
	}
	s.f = f
	s.segs = append(s.segs, s.next)
	if len(s.segs) == 1 {
		s.low = s.next
	}
	return nil
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
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
