//go:build !linux

package spool

import (
	"errors"
	"os"
)

// mapSegment is Linux's only: elsewhere segments are written with
// write(2).
func mapSegment(*os.File, int) ([]byte, error) { return nil, errors.ErrUnsupported }

func unmapSegment([]byte) error { return nil }

func prefault([]byte) error { return errors.ErrUnsupported }
