//go:build !linux

package store

import "errors"

// followWALs is Linux's alone (inotify): elsewhere every sync is DB.Sync.
func followWALs(string, func() int64) (walFollower, error) {
	return nil, errors.New("write-ahead files not followed on this system")
}
