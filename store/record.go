package store

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// Kind says what sort of directory entry a record is about.
type Kind string

// The kinds of entry the gateway mirrors.
const (
	KindAccount Kind = "account"
	KindGroup   Kind = "group"
)

// Op is the directory operation a record describes.
type Op string

// The operations the gateway journals.
const (
	OpAdd      Op = "add"
	OpModify   Op = "modify"
	OpDelete   Op = "delete"
	OpRename   Op = "rename"
	OpPassword Op = "password"
)

// State is where a record is in its life.
type State string

// Record states. An aborted record is removed, so it has no state.
const (
	// StatePrepared: journalled before the request went upstream; the
	// upstream's answer is not known yet.
	StatePrepared State = "prepared"
	// StateCommitted: the upstream accepted the change; it waits for delivery.
	StateCommitted State = "committed"
	// StateDelivered: Axigen has the change. Kept for Retention as the audit trail.
	StateDelivered State = "delivered"
	// StateDead: delivery gave up. Stays until retried or dropped.
	StateDead State = "dead"
)

// States lists every state in life order.
var States = []State{StatePrepared, StateCommitted, StateDelivered, StateDead}

// ParseState turns a state name into a State.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if strings.EqualFold(s, string(st)) {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q (want one of prepared, committed, delivered, dead)", s)
}

// SecretState says what the journal holds of a record's secret (password).
type SecretState string

// Secret states.
const (
	SecretNone      SecretState = ""          // the record never had a secret
	SecretEncrypted SecretState = "encrypted" // held, encrypted with the journal key
	SecretErased    SecretState = "erased"    // delivered (or dropped), then erased
)

// Change is one decoded modification of an attribute, as an LDAP modify
// carries it (an add request is a list of "add" changes).
//
// Changes must never hold a secret: the caller strips password values and
// passes the password in Record.Secret, which alone is stored encrypted.
type Change struct {
	Op     string   `json:"op"` // "add", "delete", "replace" or "increment"
	Attr   string   `json:"attr"`
	Values []string `json:"values,omitempty"`
}

// Record is one journalled write to an account or group entry.
type Record struct {
	Seq        uint64    `json:"seq"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor,omitempty"`  // the bound DN that made the change
	ClientAddr string    `json:"client,omitempty"` // the client's address
	Kind       Kind      `json:"kind"`
	Op         Op        `json:"op"`
	DN         string    `json:"dn"`
	NewDN      string    `json:"newDN,omitempty"` // the new DN of a rename
	// EntryKey is the entry's stable key (entryUUID or objectGUID), when known.
	// It may be filled in only at Commit (the entryUUID of an added entry).
	EntryKey string `json:"entryKey,omitempty"`
	// Name is the account's or group's name in Axigen before the change,
	// when the entry existed: what a rename or a delete starts from.
	Name string `json:"name,omitempty"`
	// MayTake are the Axigen names a write may give the entry that neither
	// its changes nor its new DN show: the names the values of its name
	// attribute gave before a write that can change which of them names it
	// (a delete of some of them; a rename whose new RDN is not of that
	// attribute), as the entry was read before the write. The journal
	// orders the record by them (Options.DeliveryNames), worked out once,
	// before the record is journaled, so that every node of a cluster
	// orders it alike.
	MayTake []string `json:"mayTake,omitempty"`
	// Groups are the DNs of the groups that listed the entry when it was
	// deleted: the directory may drop it from them (refint) with no write
	// the gateway sees, so delivery re-applies them.
	Groups  []string `json:"groups,omitempty"`
	Changes []Change `json:"changes,omitempty"`
	// Secret is the plaintext password. It lives in memory only: Prepare
	// stores it encrypted, and only records handed to a deliverer (Run) or
	// returned by Prepared carry it. It is never serialised.
	Secret      []byte      `json:"-"`
	SecretState SecretState `json:"secret,omitempty"`
	State       State       `json:"state"`
	Attempts    int         `json:"attempts,omitempty"`
	NextAttempt time.Time   `json:"nextAttempt,omitzero"`
	LastError   string      `json:"lastError,omitempty"`
	DeliveredAt time.Time   `json:"deliveredAt,omitzero"`
	// Note is free text for operators, e.g. "password skipped: pre-hashed".
	Note string `json:"note,omitempty"`
	// Token names the Prepare that journaled the record in a cluster (see
	// PrepareToken); zero elsewhere.
	Token PrepareToken `json:"-"`
}

// maxRecordBytes bounds one encoded record, so that a record, its event and
// the indexes always fit in one Badger transaction.
const maxRecordBytes = 256 << 10

// clone copies a record the caller handed in, which the caller may change
// afterwards.
func (r *Record) clone() *Record {
	c := r.next()
	c.Groups = append([]string(nil), r.Groups...)
	c.MayTake = append([]string(nil), r.MayTake...)
	c.Changes = make([]Change, len(r.Changes))
	for i, ch := range r.Changes {
		c.Changes[i] = Change{Op: ch.Op, Attr: ch.Attr, Values: append([]string(nil), ch.Values...)}
	}
	return c
}

// next starts the next version of a stored record. Stored versions are
// never changed in place, so the versions share their (fixed) changes.
func (r *Record) next() *Record {
	c := *r
	c.Secret = nil
	return &c
}

// approxSize is about the size of the record's encoding (a little more:
// each value may need escaping, counted as up to twice its length).
func (r *Record) approxSize() int {
	n := 512 + 2*(len(r.Actor)+len(r.ClientAddr)+len(r.DN)+len(r.NewDN)+len(r.EntryKey)+len(r.Name)+len(r.Note)+len(r.LastError))
	for _, g := range r.Groups {
		n += 4 + 2*len(g)
	}
	for _, g := range r.MayTake {
		n += 4 + 2*len(g)
	}
	for _, c := range r.Changes {
		n += 32 + 2*len(c.Attr)
		for _, v := range c.Values {
			n += 4 + 2*len(v)
		}
	}
	return n
}

func (r *Record) validate() error {
	switch r.Kind {
	case KindAccount, KindGroup:
	default:
		return fmt.Errorf("record kind %q: want %q or %q", r.Kind, KindAccount, KindGroup)
	}
	switch r.Op {
	case OpAdd, OpModify, OpDelete, OpPassword:
	case OpRename:
		if r.NewDN == "" {
			return fmt.Errorf("rename of %q has no new DN", r.DN)
		}
	default:
		return fmt.Errorf("record operation %q is not one the journal knows", r.Op)
	}
	if r.DN == "" {
		return fmt.Errorf("record has no DN")
	}
	for _, c := range r.Changes {
		switch c.Op {
		case "add", "delete", "replace", "increment":
		default:
			return fmt.Errorf("change of %q: operation %q is not add, delete, replace or increment", c.Attr, c.Op)
		}
	}
	return nil
}

// orderTokens names the histories a record belongs to: its stable entry key,
// every DN it touches and every Axigen account or group name its delivery
// may touch (names, when not nil: see Options.DeliveryNames). Records
// sharing a token are delivered one at a time in sequence order, so a
// rename joins the history of the old and the new DN, a record whose entry
// key is not known yet still queues behind (and ahead of) the records of
// the same DN, and an entry that takes an account or group name another
// entry gives up waits for that entry's rename (or delete) to reach Axigen
// first.
func orderTokens(r *Record, names func(*Record) []string) []string {
	return appendNameTokens(keyDNTokens(make([]string, 0, 4), r.EntryKey, r.DN, r.NewDN), r, names)
}

// keyDNTokens appends to toks the order tokens of an entry key and the DNs
// of a record: all of orderTokens' but the name tokens, which come after
// them and differ from them (their prefixes do).
func keyDNTokens(toks []string, key, dn, newDN string) []string {
	if key != "" {
		toks = append(toks, "k:"+key)
	}
	d := "d:" + schema.CanonicalDN(dn)
	toks = append(toks, d)
	if newDN != "" {
		if n := "d:" + schema.CanonicalDN(newDN); n != d {
			toks = append(toks, n)
		}
	}
	return toks
}

// appendNameTokens appends a token for each name names gives for r,
// lower-cased as Axigen compares names, once each: "a:" for an account
// record's, "g:" for a group record's. The two are apart because a group's
// delivery (LIST Groups, UPDATE Group) never reads or writes an account, nor
// an account's a group, so neither can take over the other's state; should
// Axigen refuse an account and a group of one name, the later ADD fails and
// is retried, writing nothing of the other's.
func appendNameTokens(toks []string, r *Record, names func(*Record) []string) []string {
	if names == nil {
		return toks
	}
	prefix := "a:"
	if r.Kind == KindGroup {
		prefix = "g:"
	}
	for _, n := range names(r) {
		if n == "" {
			continue
		}
		if t := prefix + strings.ToLower(n); !slices.Contains(toks, t) {
			toks = append(toks, t)
		}
	}
	return toks
}

// rekeyTokens is orderTokens of a record whose DNs are those toks were
// made of and whose entry key is key, without canonicalising the DNs
// again; its name tokens are names' for r (toks' own when names is
// nil: they are kept). toks is left as it was.
func rekeyTokens(toks []string, key string, r *Record, names func(*Record) []string) []string {
	dns := toks
	if len(dns) > 0 && strings.HasPrefix(dns[0], "k:") {
		dns = dns[1:]
	}
	out := make([]string, 0, len(dns)+1)
	if key != "" {
		out = append(out, "k:"+key)
	}
	if names == nil {
		return append(out, dns...)
	}
	for _, t := range dns {
		if strings.HasPrefix(t, "d:") {
			out = append(out, t)
		}
	}
	return appendNameTokens(out, r, names)
}
