package axigensim

import (
	"strings"
	"sync"
	"time"
)

// Direction says who sent a piece of a transcript.
type Direction int

const (
	// FromServer marks bytes the simulator sent.
	FromServer Direction = iota
	// FromClient marks one line the client sent, with its line ending.
	FromClient
	// Dropped marks the point where the simulator cut the connection.
	Dropped
)

// Event is one piece of a session's conversation.
type Event struct {
	Dir Direction
	// Raw is exactly what went over the wire (secrets included).
	Raw string
	// Masked is Raw with passwords replaced by "***": safe to show or log.
	Masked string
	At     time.Time
}

// Transcript records one session's conversation in order. It is safe for
// concurrent use: the session appends while tests read.
type Transcript struct {
	// ID numbers sessions from 1 in the order they were accepted.
	ID int
	// Label is the label of the listener that accepted the session (see
	// Server.Listen); "" for the server's own address.
	Label string

	mu     sync.Mutex
	events []Event
}

func (t *Transcript) add(dir Direction, raw, masked string) {
	t.mu.Lock()
	t.events = append(t.events, Event{Dir: dir, Raw: raw, Masked: masked, At: time.Now()})
	t.mu.Unlock()
}

// Events returns a copy of the events so far.
func (t *Transcript) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event(nil), t.events...)
}

// Bytes returns the conversation's exact bytes in order, both directions
// interleaved as a terminal would show them (the server does not echo, so
// each command follows its prompt). It contains secrets: tests only.
func (t *Transcript) Bytes() string {
	var b strings.Builder
	for _, e := range t.Events() {
		b.WriteString(e.Raw)
	}
	return b.String()
}

// String returns the conversation like Bytes, with passwords masked.
func (t *Transcript) String() string {
	var b strings.Builder
	for _, e := range t.Events() {
		b.WriteString(e.Masked)
	}
	return b.String()
}

// Commands returns the lines the client sent, as the server split them
// (without line endings, secrets included): one entry per command the
// server executed or refused.
func (t *Transcript) Commands() []string {
	var out []string
	for _, e := range t.Events() {
		if e.Dir == FromClient {
			out = append(out, strings.TrimRight(e.Raw, "\r\n"))
		}
	}
	return out
}
