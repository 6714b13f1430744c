package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// DisabledAccount is an Axigen account that the gateway disabled, rather
// than removed, and must remember doing so: to remove it once its grace
// period is over, and to enable it again when its entry comes back (or its
// password is set again).
//
// The table lives in the journal's Badger, beside the records, because it
// is the same kind of state: what the gateway owes Axigen. It is written
// through the journal's one writer (durable on return, like Prepare), so it
// survives restarts and crashes. A replicated journal (Options.Replicated)
// changes it through commands (CmdPutDisabled, CmdRemoveDisabled) and
// carries it in its snapshots.
type DisabledAccount struct {
	// Name is the account's name in Axigen.
	Name string `json:"name"`
	// EntryKey is the directory entry's stable key (entryUUID, objectGUID)
	// when known: an entry that comes back with it gets this account back.
	EntryKey string `json:"entryKey,omitempty"`
	// DN is where the entry was last.
	DN string `json:"dn,omitempty"`
	// Reason says why (DisabledGone, DisabledNoPassword, DisabledLocked).
	Reason string `json:"reason"`
	// Since is when the gateway disabled it.
	Since time.Time `json:"since"`
	// Seq is the journal record whose delivery disabled it (0 for a
	// resync): a replay of that record keeps Since, another record starts
	// the grace again.
	Seq uint64 `json:"seq,omitempty"`
	// GraceFrom is when its delete-after grace started: Since when a grace
	// was set then, else the first sweep with one (zero until then), so
	// that turning deleteAfter on does not remove at once every account
	// disabled while it was off.
	GraceFrom time.Time `json:"graceFrom,omitzero"`
	// Scrambled says the gateway made the Axigen password unknowable when
	// it disabled the account (its password was removed in the directory):
	// only a password delivered through the gateway enables it again.
	Scrambled bool `json:"scrambled,omitempty"`
	// RemovalSeq is the journal record that removes it at the end of its
	// grace, once one is journaled: the sweep journals no other while that
	// one is pending or dead.
	RemovalSeq uint64 `json:"removalSeq,omitempty"`
}

// Reasons the gateway disables an account.
const (
	// DisabledGone: the entry was deleted or moved out of the account base.
	DisabledGone = "gone"
	// DisabledNoPassword: the entry's password was deleted (the Axigen
	// password was made unknowable).
	DisabledNoPassword = "no password"
	// DisabledLocked: the entry is disabled or locked in the directory
	// (the Axigen password was made unknowable).
	DisabledLocked = "locked"
)

// Badger keys: "x/n/"+lower(name) holds the JSON of a DisabledAccount,
// "x/k/"+entry key the lower-case name it belongs to.
var (
	prefixDisabled     = []byte("x/")
	prefixDisabledName = []byte("x/n/")
	prefixDisabledKey  = []byte("x/k/")
)

func disabledNameKey(name string) []byte {
	return append(append([]byte(nil), prefixDisabledName...), strings.ToLower(name)...)
}

func disabledEntryKey(key string) []byte {
	return append(append([]byte(nil), prefixDisabledKey...), strings.ToLower(key)...)
}

// PutDisabled records (or replaces) a disabled account; it returns once
// the change is on disk.
func (j *Journal) PutDisabled(ctx context.Context, d DisabledAccount) error {
	if p := j.proposer(); p != nil {
		if d.Name == "" {
			return errors.New("disabled account without a name")
		}
		return j.proposeChange(ctx, p, "record disabled account "+d.Name, Command{Op: CmdPutDisabled, Disabled: d})
	}
	if err := j.recs.local; err != nil {
		return err
	}
	if d.Name == "" {
		return errors.New("disabled account without a name")
	}
	value, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode disabled account: %w", err)
	}
	if err := j.w.submit(ctx, func(b *batch) error { return b.putDisabled(d, value) }); err != nil {
		return fmt.Errorf("record disabled account %s: %w", d.Name, err)
	}
	return nil
}

// putDisabled records d, whose JSON is value, in place of any account of
// its name.
func (b *batch) putDisabled(d DisabledAccount, value []byte) error {
	if err := b.dropDisabled(d.Name); err != nil {
		return err
	}
	if err := b.set(disabledNameKey(d.Name), value); err != nil {
		return err
	}
	if d.EntryKey != "" {
		if err := b.set(disabledEntryKey(d.EntryKey), []byte(strings.ToLower(d.Name))); err != nil {
			return err
		}
	}
	b.noteDisabled(d.Name, &d)
	return nil
}

// noteDisabled keeps what the batch wrote of a disabled account (nil:
// removed), for its later reads and those of the batches after it.
func (b *batch) noteDisabled(name string, d *DisabledAccount) {
	if b.disabled == nil {
		b.disabled = map[string]*DisabledAccount{}
	}
	b.disabled[strings.ToLower(name)] = d
}

// getDisabled reads a disabled account as this batch sees it: its own
// writes, then those of batches still on their way to the disk, then
// Badger.
func (b *batch) getDisabled(name string) (DisabledAccount, bool, error) {
	lower := strings.ToLower(name)
	d, ok := b.disabled[lower]
	if !ok {
		var r recentDisabled
		if r, ok = b.recentDisabled[lower]; ok {
			d = r.d
		}
	}
	if ok {
		if d == nil {
			return DisabledAccount{}, false, nil
		}
		return *d, true, nil
	}
	return readDisabled(b.txn, disabledNameKey(name))
}

// RemoveDisabled forgets a disabled account (enabled again or removed); it
// is not an error when there is none.
func (j *Journal) RemoveDisabled(ctx context.Context, name string) error {
	if p := j.proposer(); p != nil {
		return j.proposeChange(ctx, p, "forget disabled account "+name, Command{Op: CmdRemoveDisabled, Name: name})
	}
	if err := j.recs.local; err != nil {
		return err
	}
	if err := j.w.submit(ctx, func(b *batch) error { return b.dropDisabled(name) }); err != nil {
		return fmt.Errorf("forget disabled account %s: %w", name, err)
	}
	return nil
}

// dropDisabled deletes a disabled account's keys, if any.
func (b *batch) dropDisabled(name string) error {
	old, ok, err := b.getDisabled(name)
	if err != nil || !ok {
		return err
	}
	// The entry key's index goes only while it still names this account:
	// another row may have taken the key since.
	if old.EntryKey != "" {
		owner, found, err := disabledKeyOwner(b.txn, old.EntryKey)
		if err != nil {
			return err
		}
		if !found || owner == strings.ToLower(name) {
			if err := b.delete(disabledEntryKey(old.EntryKey)); err != nil {
				return err
			}
		}
	}
	if err := b.delete(disabledNameKey(name)); err != nil {
		return err
	}
	b.noteDisabled(name, nil)
	return nil
}

// disabledKeyOwner reads which account name an entry key's index names.
func disabledKeyOwner(txn *badger.Txn, key string) (string, bool, error) {
	item, err := txn.Get(disabledEntryKey(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	name, err := item.ValueCopy(nil)
	return string(name), err == nil, err
}

// Disabled returns the disabled account of that name (any case).
func (j *Journal) Disabled(name string) (DisabledAccount, bool, error) {
	var (
		d  DisabledAccount
		ok bool
	)
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		d, ok, err = readDisabled(txn, disabledNameKey(name))
		return err
	})
	return d, ok, err
}

// DisabledByKey returns the disabled account of the entry with that key.
func (j *Journal) DisabledByKey(key string) (DisabledAccount, bool, error) {
	var (
		d  DisabledAccount
		ok bool
	)
	if key == "" {
		return d, false, nil
	}
	err := j.db.View(func(txn *badger.Txn) error {
		name, found, err := disabledKeyOwner(txn, key)
		if err != nil || !found {
			return err
		}
		d, ok, err = readDisabled(txn, disabledNameKey(name))
		if ok && !strings.EqualFold(d.EntryKey, key) {
			d, ok = DisabledAccount{}, false // the name's row is another entry's now
		}
		return err
	})
	return d, ok, err
}

// DisabledAccounts lists every disabled account, by name.
func (j *Journal) DisabledAccounts() ([]DisabledAccount, error) {
	var out []DisabledAccount
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDisabledName, PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d DisabledAccount
			if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
				return fmt.Errorf("disabled account %s: %w", it.Item().Key(), err)
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

func readDisabled(txn *badger.Txn, key []byte) (DisabledAccount, bool, error) {
	var d DisabledAccount
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return d, false, nil
	}
	if err != nil {
		return d, false, err
	}
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
		return d, false, fmt.Errorf("disabled account %s: %w", key, err)
	}
	return d, true, nil
}
