// Package replica keeps a standby gateway's journal identical to the
// primary's, makes the primary wait for the standby in synchronous mode, and
// tells the standby when to take over (docs/architecture.md, "Failover").
//
// The transport is HTTP on the gateway's admin endpoint, authenticated with
// a shared secret (Authorization: Bearer SECRET, compared in constant time):
//
//	GET  /replication/status                   who the gateway is: role, node, history, position
//	GET  /replication/feed?after=N&history=H   the journal's changes after position N, one
//	                                           store.Event per JSON line, flushed one by one,
//	                                           a heartbeat line each second when idle
//	POST /replication/ack?session=S&position=N the standby holds every change up to N
//
// The secret guards the journal, not the wire: run the admin listener on
// loopback or a private network (there is no TLS on it).
//
// History. Every journal copy belongs to a history, a random id. A primary
// keeps its history across restarts; a standby that takes over starts a new
// history, forked from the old one at its position. A standby resumes from
// its position only when it holds a prefix of the primary's history (the
// same history, or the parent one up to the fork); otherwise, typically an
// old primary that comes back and may hold changes the new primary never
// saw, the primary sends a snapshot and the copy is replaced.
package replica

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Role is what a gateway is doing in a pair.
type Role string

// Roles.
const (
	RolePrimary Role = "primary" // serves clients, delivers, feeds the standby
	RoleStandby Role = "standby" // follows a primary's journal
)

// Mode says whether the primary waits for the standby before it
// acknowledges a write.
type Mode string

// Replication modes.
const (
	// Sync: a write is acknowledged only once the standby holds its record
	// (or the wait timed out and the primary degraded to async, loudly).
	Sync Mode = "sync"
	// Async: the primary does not wait; what the standby lacks is the
	// possible loss window, reported as a metric.
	Async Mode = "async"
)

// ParseMode turns a setting into a Mode.
func ParseMode(s string) (Mode, error) {
	switch Mode(strings.ToLower(s)) {
	case Sync:
		return Sync, nil
	case Async:
		return Async, nil
	}
	return "", fmt.Errorf("replication mode %q: want sync or async", s)
}

// Status is what /replication/status answers.
type Status struct {
	Role     Role   `json:"role"`
	Node     string `json:"node"`
	History  string `json:"history,omitempty"`
	Position uint64 `json:"position"`
	// Acked is, on a primary, the position its standby confirmed holding.
	Acked uint64 `json:"acked,omitempty"`
}

// Wire headers of the feed.
const (
	headerHistory  = "X-Ldapgate-History"
	headerSession  = "X-Ldapgate-Session"
	headerSnapshot = "X-Ldapgate-Snapshot"
)

// Heartbeat is the type of the feed line a primary sends when it has had
// nothing else to send for a second; its Pos is the primary's position.
const Heartbeat = "heartbeat"

// ReadSecret reads the shared replication secret from a file (without its
// line ending). It must be at least 16 bytes.
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("replication secret: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if len(s) < 16 {
		return nil, fmt.Errorf("replication secret in %s: at least 16 characters are needed", path)
	}
	return []byte(s), nil
}

// authorized checks the request's bearer token against secret in constant
// time.
func authorized(r *http.Request, secret []byte) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(token), secret) == 1
}

func setAuth(req *http.Request, secret []byte) {
	req.Header.Set("Authorization", "Bearer "+string(secret))
}

// NodeState is a gateway's replication identity, kept in its data folder
// beside the journal (DATA_DIR/replication.json).
type NodeState struct {
	// Node names this gateway; it breaks ties between two standbys.
	Node string `json:"node"`
	// Role is the role the gateway last ran in.
	Role Role `json:"role,omitempty"`
	// History is the history the journal belongs to; empty while a
	// standby's copy is incomplete (a snapshot under way).
	History string `json:"history,omitempty"`
	// Parent and ForkPos: the history this one was forked from, and the
	// last position the two share.
	Parent  string `json:"parent,omitempty"`
	ForkPos uint64 `json:"forkPos,omitempty"`
}

// StateFile is a NodeState saved on every change.
type StateFile struct {
	path string
	mu   sync.Mutex
	st   NodeState
}

// StatePath is where a data folder keeps its NodeState.
func StatePath(dataDir string) string { return filepath.Join(dataDir, "replication.json") }

// LoadState reads the state at path, creating it with a new node id.
func LoadState(path string) (*StateFile, error) {
	f := &StateFile{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		f.st.Node = newID()
		return f, f.save()
	case err != nil:
		return nil, fmt.Errorf("replication state: %w", err)
	}
	if err := json.Unmarshal(b, &f.st); err != nil {
		return nil, fmt.Errorf("replication state %s: %w", path, err)
	}
	if f.st.Node == "" {
		f.st.Node = newID()
		return f, f.save()
	}
	return f, nil
}

// Get returns the current state.
func (f *StateFile) Get() NodeState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

// Update changes the state and saves it.
func (f *StateFile) Update(change func(*NodeState)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.st
	change(&f.st)
	if f.st == old {
		return nil
	}
	if err := f.save(); err != nil {
		f.st = old
		return err
	}
	return nil
}

// BecomePrimary records that the gateway serves as primary from a journal
// at position pos. A journal that was a standby's copy (or has no history)
// forks a new history: the old primary may have gone on past pos.
func (f *StateFile) BecomePrimary(pos uint64) error {
	return f.Update(func(s *NodeState) {
		if s.Role == RolePrimary && s.History != "" {
			return
		}
		if s.History != "" {
			s.Parent, s.ForkPos = s.History, pos
		} else {
			s.Parent, s.ForkPos = "", 0
		}
		s.History = newID()
		s.Role = RolePrimary
	})
}

// save writes the state atomically (temporary file, fsync, rename).
func (f *StateFile) save() error {
	b, err := json.MarshalIndent(f.st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path), ".tmp-replication-")
	if err != nil {
		return fmt.Errorf("replication state: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("replication state: %w", err)
	}
	return nil
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
