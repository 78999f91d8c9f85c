//go:build !linux

package docker

import "errors"

// inMemory cannot tell a tmpfs outside Linux: secrets are refused there
// rather than risk writing them to disk.
func inMemory(string) (bool, error) {
	return false, errors.New("secrets need a Linux host (a tmpfs for their files)")
}
