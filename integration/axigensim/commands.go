package axigensim

import "time"

// Command is one command line a session received, as the server-wide
// command log keeps it: which client sent what, when, and what it changed.
// Tests that run several clients against one Axigen (the gateways of a
// cluster, each on its own labelled listener) audit with it who wrote to
// Axigen when, and in what order each account changed.
type Command struct {
	// At is when the server read the line; it ran at once.
	At time.Time
	// Label is the label of the listener the session came through (see
	// Server.Listen); "" for the server's own address.
	Label string
	// Session is the session's transcript ID.
	Session int
	// Context is where the command ran: the prompt's context before it
	// ("login", "domain", "domain-account", ...).
	Context string
	// Line is the command as sent, passwords masked ("***").
	Line string
	// OK reports a +OK answer; false for -ERR, or a line the server
	// dropped the connection on without running it.
	OK bool
	// Change is what the command changed in the accounts and groups; nil
	// for everything else (reads, context moves, drafts, failures).
	Change *Change
}

// Change is one change of the shared state: an account or group saved
// (COMMIT) or removed (REMOVE).
type Change struct {
	// Seq orders the changes of every session as the state took them.
	Seq    uint64
	Domain string
	// Kind is "account" or "group".
	Kind string
	// Name is the account's or group's name as saved or removed.
	Name    string
	Removed bool
	// Account and Group are the item as saved (a copy). An account holds
	// its password: the value a test gave it, for the test to compare.
	Account *AccountState
	Group   *GroupState
}

// Commands returns every command received so far, by all sessions of all
// listeners, in the order the server logged them (a change's place among
// changes is its Seq).
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Command(nil), s.commands...)
}

func (s *Server) logCommand(c Command) {
	s.mu.Lock()
	s.commands = append(s.commands, c)
	s.mu.Unlock()
}

// nextChangeLocked numbers a change (s.mu held).
func (s *Server) nextChangeLocked() uint64 {
	s.changes++
	return s.changes
}
