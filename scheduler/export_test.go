package scheduler

import "context"

// Reconcile runs one pass of the reconcile loop; the re-placements it
// starts run on in the background.
func (s *Scheduler) Reconcile(ctx context.Context) error { return s.reconcile(ctx) }

// Leading reports whether the scheduler leads.
func (s *Scheduler) Leading() bool { return s.leading() }

// Kill stops the scheduler as a process that died would: its lease is
// left to expire.
func (s *Scheduler) Kill() error { return s.close(false) }
