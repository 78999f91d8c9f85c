package scheduler

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/gustfaas/gust"
)

// Candidate is a live, ready worker a placement may use, with what is
// taken on it already.
type Candidate struct {
	gust.WorkerInfo
	// Used is the memory other functions take on it: the larger of the
	// warm minimums their placements reserve there and the instances it
	// holds of them (a burst above the minimum holds memory too).
	Used int64
	// Placements counts the functions placed on it.
	Placements int
}

// free is the memory left on c; a worker that advertises no capacity has
// no bound.
func (c *Candidate) free() int64 {
	if c.MemoryBytes == 0 {
		return math.MaxInt64
	}
	return c.MemoryBytes - c.Used
}

// Placer picks the workers of a function's placement.
type Placer interface {
	// Place returns at most n workers for fn out of candidates (sorted by
	// id), keeping those of current that are still candidates and still
	// fit. The i-th worker of k takes gust.Share(min, i, k) of fn's warm
	// minimum, and at least room for one instance: no worker gets more
	// than its free memory holds. When no worker has room it fails with
	// an EUNAVAILABLE error on field "memory" that says what is missing.
	Place(fn *gust.Function, n int, current []string, candidates []Candidate) ([]string, error)
}

// CapacityPlacer places within each worker's memory, spreading a
// function's instances over distinct workers: it keeps the current
// workers that still fit, then prefers workers that hold the function's
// image (no pull), then those holding the fewest placements, then those
// with the most memory free. When the whole minimum does not fit on n
// workers it tries fewer, whose shares are larger: a smaller placement
// that fits, rather than one past a worker's memory.
type CapacityPlacer struct{}

var _ Placer = CapacityPlacer{}

// Place implements Placer.
func (CapacityPlacer) Place(fn *gust.Function, n int, current []string, candidates []Candidate) ([]string, error) {
	if n <= 0 {
		return []string{}, nil
	}
	if len(candidates) == 0 {
		return nil, gust.Errorf(gust.EUNAVAILABLE, "no worker is available to run %s", fn.Key())
	}
	cfg := fn.Config()
	rest := slices.Clone(candidates)
	slices.SortStableFunc(rest, func(a, b Candidate) int {
		ai, bi := a.HasImage(fn.Spec.Image), b.HasImage(fn.Spec.Image)
		if ai != bi {
			if ai {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(a.Placements, b.Placements); c != 0 {
			return c
		}
		return cmp.Compare(b.free(), a.free())
	})
	for k := min(n, len(candidates)); k >= 1; k-- {
		if out := fill(cfg, k, current, candidates, rest); out != nil {
			return out, nil
		}
	}
	most := slices.MaxFunc(candidates, func(a, b Candidate) int { return cmp.Compare(a.free(), b.free()) })
	return nil, &gust.Error{Code: gust.EUNAVAILABLE, Field: "memory", Message: fmt.Sprintf(
		"no worker has room for %s: %d warm instance(s) of %d MiB need %d MiB of memory, and the ready worker with the most has %d MiB free (%s)",
		fn.Key(), max(1, cfg.Min), cfg.MemoryBytes>>20, int64(max(1, cfg.Min))*cfg.MemoryBytes>>20, max(0, most.free())>>20, most.ID)}
}

// fill returns k workers that each fit their share, or nil: current ones
// first, in their order, then the first of rest that fits each place.
func fill(cfg gust.FunctionConfig, k int, current []string, candidates, rest []Candidate) []string {
	// need is the memory the i-th worker reserves: its share of the
	// minimum, and room for one instance when that share is none.
	need := func(i int) int64 { return int64(max(1, gust.Share(cfg.Min, i, k))) * cfg.MemoryBytes }
	out := make([]string, 0, k)
	for _, id := range current {
		if len(out) == k {
			break
		}
		i := slices.IndexFunc(candidates, func(c Candidate) bool { return c.ID == id })
		if i >= 0 && !slices.Contains(out, id) && candidates[i].free() >= need(len(out)) {
			out = append(out, id)
		}
	}
	for len(out) < k {
		j := slices.IndexFunc(rest, func(c Candidate) bool { return !slices.Contains(out, c.ID) && c.free() >= need(len(out)) })
		if j < 0 {
			return nil
		}
		out = append(out, rest[j].ID)
	}
	return out
}
