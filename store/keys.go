package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Keys.
var (
	metaSeq     = []byte("m/seq")
	metaLoading = []byte("m/loading") // a replicated journal half restored (see Restore)
	metaKey     = []byte("m/keycheck")
	metaApplied = []byte("m/applied") // a replicated journal's last applied Raft index
	metaTerm    = []byte("m/term")    // a replicated journal's delivery term
	metaAborted = []byte("m/aborted") // a replicated journal's tombstones (see PrepareToken)
	// metaReplicated marks a cluster's journal (Options.Replicated), so that
	// neither kind is opened as the other (see MakeReplicated).
	metaReplicated = []byte("m/replicated")

	prefixRecord    = []byte("r/")
	prefixSecret    = []byte("s/")
	prefixActive    = []byte("a/")
	prefixDelivered = []byte("d/")

	// The change log a journal kept for the former standby, before the Raft
	// cluster, and its counters: still found in journals written then,
	// removed by Open (dropChangeLog) and MakeReplicated.
	prefixEvent = []byte("e/")
	metaPos     = []byte("m/pos")
	metaHorizon = []byte("m/horizon")
)

func numKey(prefix []byte, n uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, n)
}

func keyNum(prefix, key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(prefix):])
}

func deliveredKey(at time.Time, seq uint64) []byte {
	k := numKey(prefixDelivered, uint64(at.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

func encodeNum(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func getNum(txn *badger.Txn, key []byte) (uint64, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("key %s: bad counter", key)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, true, err
}
