package raftlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// The buckets raft-boltdb v2 keeps the log and the stable keys in.
var (
	boltLogs = []byte("logs")
	boltConf = []byte("conf")
)

// MigrateBolt copies a raft-boltdb log (boltPath, the store the cluster
// used before this package) into a new store in dir, once: when boltPath
// exists and dir does not. The copy is built beside dir and renamed into
// place, then boltPath is renamed to boltPath+".migrated"; a crash at any
// point leaves either the old log alone or a complete new one, and the
// next call finishes or starts over. It reports whether it migrated.
func MigrateBolt(ctx context.Context, boltPath, dir string, opts Options) (bool, error) {
	if _, err := os.Stat(boltPath); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("raftlog: %w", err)
	}
	parent := filepath.Dir(dir)
	if _, err := os.Stat(dir); err == nil {
		// Copied and renamed into place, but the bolt file kept its name.
		return true, retire(boltPath, parent)
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("raftlog: %w", err)
	}
	tmp := dir + ".migrating"
	if err := os.RemoveAll(tmp); err != nil {
		return false, fmt.Errorf("raftlog: %w", err)
	}
	if err := copyBolt(ctx, boltPath, tmp, opts); err != nil {
		return false, fmt.Errorf("raftlog: migrate %s: %w", boltPath, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return false, fmt.Errorf("raftlog: %w", err)
	}
	if err := syncDir(osFS{}, parent); err != nil {
		return false, err
	}
	return true, retire(boltPath, parent)
}

func retire(boltPath, parent string) error {
	if err := os.Rename(boltPath, boltPath+".migrated"); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	return syncDir(osFS{}, parent)
}

func copyBolt(ctx context.Context, boltPath, dir string, opts Options) error {
	keys, from, to, err := scanBolt(boltPath)
	if err != nil {
		return err
	}
	st, err := Open(ctx, dir, opts)
	if err != nil {
		return err
	}
	defer st.Close()
	for k, v := range keys {
		if err := st.Set([]byte(k), v); err != nil {
			return err
		}
	}
	if to == 0 {
		return st.Close()
	}
	bs, err := raftboltdb.New(raftboltdb.Options{Path: boltPath, BoltOptions: &bbolt.Options{Timeout: 10 * time.Second}})
	if err != nil {
		return err
	}
	defer bs.Close()
	const batch = 256
	logs := make([]*raft.Log, 0, batch)
	for i := from; i <= to; i++ {
		l := new(raft.Log)
		if err := bs.GetLog(i, l); err != nil {
			return fmt.Errorf("index %d: %w", i, err)
		}
		logs = append(logs, l)
		if len(logs) == batch || i == to {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := st.StoreLogs(logs); err != nil {
				return err
			}
			logs = logs[:0]
		}
	}
	if err := bs.Close(); err != nil {
		return err
	}
	return st.Close()
}

// scanBolt reads the stable keys and the range of the log to copy: its
// last contiguous run. A bolt log may hold a gap, left when a follower
// installed a snapshot past its last entry (bolt's store is not
// monotonic); what lies below the gap is older than that snapshot.
func scanBolt(boltPath string) (keys map[string][]byte, from, to uint64, err error) {
	db, err := bbolt.Open(boltPath, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		return nil, 0, 0, err
	}
	defer db.Close()
	keys = map[string][]byte{}
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(boltConf); b != nil {
			if err := b.ForEach(func(k, v []byte) error {
				keys[string(k)] = append([]byte{}, v...)
				return nil
			}); err != nil {
				return err
			}
		}
		b := tx.Bucket(boltLogs)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			if len(k) != 8 {
				return fmt.Errorf("log key %x is not an index", k)
			}
			i := binary.BigEndian.Uint64(k)
			if to == 0 || i != to+1 {
				from = i
			}
			to = i
			return nil
		})
	})
	return keys, from, to, err
}
