//go:build !linux

package raftlog

import "os"

// datasync is fsync where fdatasync(2) is not offered.
func datasync(f *os.File) error { return f.Sync() }
