package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/store"
)

// journalCommand is `ldapgate journal`: the operator's view of the change
// journal of a stopped gateway (a running one holds its lock).
func journalCommand() *cli.Command {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	return &cli.Command{
		Name:  "journal",
		Usage: "inspect and repair the change journal of a stopped gateway",
		Description: `Works on DATA_DIR/journal while the gateway is stopped: a running gateway
holds the journal's lock. Secrets are never shown.`,
		Flags: []cli.Flag{dataDirFlag(true)},
		Subcommands: []*cli.Command{
			{
				Name:      "ls",
				Usage:     "list records (by default the newest 50)",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					dataDirFlag(false),
					&cli.BoolFlag{Name: "dead", Usage: "only dead letters"},
					&cli.StringSliceFlag{Name: "state", Usage: "only records in this state: prepared, committed, delivered, dead (repeatable)"},
					&cli.IntFlag{Name: "limit", Value: 50, Usage: "show the newest `N` matching records; 0 shows all"},
					jsonFlag,
				},
				Action: journalLs,
			},
			{
				Name:      "show",
				Usage:     "print one record with its changes",
				ArgsUsage: "SEQ",
				Flags:     []cli.Flag{dataDirFlag(false), jsonFlag},
				Action:    journalShow,
			},
			{
				Name:      "retry",
				Usage:     "deliver dead letters again (with a fresh count of attempts), or a waiting record now",
				ArgsUsage: "SEQ...",
				Flags: []cli.Flag{
					dataDirFlag(false),
					&cli.BoolFlag{Name: "all-dead", Usage: "retry every dead letter"},
				},
				Action: journalRetry,
			},
			{
				Name:      "drop",
				Usage:     "remove records that are not delivered (dead letters, usually), with their secrets",
				ArgsUsage: "SEQ...",
				Flags:     []cli.Flag{dataDirFlag(false)},
				Action:    journalDrop,
			},
			{
				Name:      "stats",
				Usage:     "count records per state and measure the backlog",
				ArgsUsage: " ",
				Flags:     []cli.Flag{dataDirFlag(false), jsonFlag},
				Action:    journalStats,
			},
		},
	}
}

// dataDirFlag is --data-dir. It is accepted before and after the
// subcommand; only the command's own copy reads the environment, so that a
// flag given anywhere beats LDAPGATE_DATA_DIR.
func dataDirFlag(withEnv bool) cli.Flag {
	f := &cli.StringFlag{Name: "data-dir", Value: "./data", Usage: "the gateway's data folder (the journal is in DATA_DIR/journal)"}
	if withEnv {
		f.EnvVars = []string{"LDAPGATE_DATA_DIR"}
	}
	return f
}

func dataDir(c *cli.Context) string {
	for _, ctx := range c.Lineage() {
		if ctx.Command != nil && ctx.IsSet("data-dir") {
			return ctx.String("data-dir")
		}
	}
	return c.String("data-dir")
}

// openStoppedJournal opens the journal in dataDir as a command that reads
// it does: it never creates one, runs no housekeeping, needs no key, and
// opens a cluster node's copy as readable (its changes go through the
// running cluster: Retry and Drop say so). The errors are store.Open's.
func openStoppedJournal(dataDir string, log *slog.Logger) (*store.Journal, error) {
	opts := store.Options{MustExist: true, HousekeepingInterval: -1, Logger: log}
	j, err := store.Open(journalDir(dataDir), opts)
	if errors.Is(err, store.ErrReplicated) {
		opts.Replicated = true
		j, err = store.Open(journalDir(dataDir), opts)
	}
	return j, err
}

// openJournal opens the journal of a stopped gateway. It never creates one
// and needs no key: the CLI shows no secret.
func openJournal(c *cli.Context) (*store.Journal, error) {
	j, err := openStoppedJournal(dataDir(c), slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		var locked *store.LockedError
		if errors.As(err, &locked) {
			// Without the socket the holder is a gateway still starting
			// or stopping, or another `ldapgate journal` command on a
			// stopped gateway's folder: waiting is the remedy, not a stop.
			return nil, fmt.Errorf("the %w (%s) and no gateway answers on %s: "+
				"a gateway starting or stopping, or another ldapgate journal command; try again in a moment",
				store.ErrLocked, locked.Dir, adminSocket(dataDir(c)))
		}
		if errors.Is(err, store.ErrNoJournal) {
			return nil, fmt.Errorf("%w (set --data-dir or LDAPGATE_DATA_DIR to the gateway's data folder)", err)
		}
		return nil, err
	}
	return j, nil
}

// withJournal runs fn on the data folder's journal: opened directly when
// the gateway is stopped, or through the running gateway's admin socket
// (which reports live is true) when it holds the lock.
func withJournal(c *cli.Context, fn func(j journalAPI, live bool) error) (err error) {
	j, err := openJournal(c)
	if errors.Is(err, store.ErrLocked) {
		if remote, ok := newRemoteJournal(dataDir(c)); ok {
			return fn(remote, true)
		}
	}
	if err != nil {
		return err
	}
	defer func() {
		if cerr := j.Close(); err == nil {
			err = cerr
		}
	}()
	return fn(j, false)
}

func journalLs(c *cli.Context) error {
	args, err := positionalArgs(c)
	if err != nil {
		return err
	}
	if len(args) > 0 {
		return fmt.Errorf("ls takes no arguments (got %q); filter with --state or --dead", args[0])
	}
	var states []store.State
	if c.Bool("dead") {
		states = append(states, store.StateDead)
	}
	for _, v := range c.StringSlice("state") {
		for _, name := range strings.Split(v, ",") {
			st, err := store.ParseState(strings.TrimSpace(name))
			if err != nil {
				return err
			}
			states = append(states, st)
		}
	}
	limit := c.Int("limit")
	if limit < 0 {
		return fmt.Errorf("--limit %d: want 0 (all) or more", limit)
	}
	return withJournal(c, func(j journalAPI, live bool) error {
		recs, err := j.List(store.Filter{States: states, Limit: limit})
		if err != nil {
			return err
		}
		if c.Bool("json") {
			if recs == nil {
				recs = []*store.Record{}
			}
			return writeJSON(c.App.Writer, recs)
		}
		st, err := j.Stats()
		if err != nil {
			return err
		}
		return printRecords(c.App.Writer, recs, matching(st, states), time.Now())
	})
}

// matching counts the records a state filter selects.
func matching(st store.Stats, states []store.State) int {
	count := map[store.State]int{
		store.StatePrepared: st.Prepared, store.StateCommitted: st.Committed,
		store.StateDelivered: st.Delivered, store.StateDead: st.Dead,
	}
	if len(states) == 0 {
		return st.Prepared + st.Committed + st.Delivered + st.Dead
	}
	n := 0
	seen := map[store.State]bool{}
	for _, s := range states {
		if !seen[s] {
			seen[s] = true
			n += count[s]
		}
	}
	return n
}

func printRecords(w io.Writer, recs []*store.Record, total int, now time.Time) error {
	if len(recs) == 0 {
		_, err := fmt.Fprintln(w, "no records")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME (UTC)\tSTATE\tKIND\tOP\tDN\tTRIES\tDETAIL")
	for _, r := range recs {
		dn := r.DN
		if r.NewDN != "" {
			dn += " -> " + r.NewDN
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Seq, r.Time.UTC().Format("2006-01-02 15:04:05"),
			r.State, r.Kind, r.Op, oneLine(dn, 160), r.Attempts, oneLine(detail(r, now), 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if total > len(recs) {
		_, err := fmt.Fprintf(w, "(the newest %d of %d; --limit 0 shows all)\n", len(recs), total)
		return err
	}
	return nil
}

// detail is the one thing an operator wants to know next about a record.
func detail(r *store.Record, now time.Time) string {
	switch r.State {
	case store.StateCommitted:
		if r.Attempts == 0 {
			return "waiting for delivery"
		}
		return fmt.Sprintf("retry in %s: %s", max(r.NextAttempt.Sub(now), 0).Round(time.Second), r.LastError)
	case store.StateDead:
		return r.LastError
	case store.StateDelivered:
		if r.LastError != "" { // an incomplete delivery: what it left out
			return "delivered; " + r.LastError
		}
		return "delivered " + r.DeliveredAt.UTC().Format("2006-01-02 15:04:05")
	case store.StatePrepared:
		return "upstream outcome unknown"
	}
	return ""
}

func oneLine(s string, width int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s
}

func parseSeqs(c *cli.Context) ([]uint64, error) {
	args, err := positionalArgs(c)
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, a := range args {
		n, err := strconv.ParseUint(strings.TrimPrefix(a, "#"), 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a record's sequence number", a)
		}
		seqs = append(seqs, n)
	}
	return seqs, nil
}

func journalShow(c *cli.Context) error {
	seqs, err := parseSeqs(c)
	if err != nil {
		return err
	}
	if len(seqs) != 1 {
		return fmt.Errorf("show takes one sequence number (see `ldapgate journal ls`)")
	}
	return withJournal(c, func(j journalAPI, live bool) error {
		r, err := j.Get(seqs[0])
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return writeJSON(c.App.Writer, r)
		}
		return printRecord(c.App.Writer, r)
	})
}

func printRecord(w io.Writer, r *store.Record) error {
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", name, value)
		}
	}
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05.000 UTC")
	}
	field("record", strconv.FormatUint(r.Seq, 10))
	field("state", string(r.State))
	field("time", ts(r.Time))
	field("actor", r.Actor)
	field("client", r.ClientAddr)
	field("kind", string(r.Kind))
	field("operation", string(r.Op))
	field("dn", r.DN)
	field("new dn", r.NewDN)
	field("entry key", r.EntryKey)
	switch r.SecretState {
	case store.SecretEncrypted:
		field("secret", "(password, encrypted)")
	case store.SecretErased:
		field("secret", "(erased)")
	}
	field("attempts", strconv.Itoa(r.Attempts))
	field("next attempt", ts(r.NextAttempt))
	field("last error", r.LastError)
	field("delivered", ts(r.DeliveredAt))
	field("note", r.Note)
	if len(r.Changes) == 0 {
		field("changes", "(none)")
	} else {
		fmt.Fprintln(tw, "changes:\t")
		for _, ch := range r.Changes {
			fmt.Fprintf(tw, "  %s\t%s: %s\n", ch.Op, ch.Attr, strings.Join(ch.Values, "; "))
		}
	}
	return tw.Flush()
}

func journalRetry(c *cli.Context) error {
	seqs, err := parseSeqs(c)
	if err != nil {
		return err
	}
	if len(seqs) == 0 && !c.Bool("all-dead") {
		return fmt.Errorf("retry needs sequence numbers or --all-dead")
	}
	return withJournal(c, func(j journalAPI, live bool) error {
		if c.Bool("all-dead") {
			dead, err := j.List(store.Filter{States: []store.State{store.StateDead}})
			if err != nil {
				return err
			}
			for _, r := range dead {
				seqs = append(seqs, r.Seq)
			}
			if len(dead) == 0 {
				fmt.Fprintln(c.App.Writer, "no dead letters")
			}
		}
		return eachRecord(c, seqs, func(ctx context.Context, seq uint64) (string, error) {
			if live {
				return "queued for delivery", j.Retry(ctx, seq)
			}
			return "will be delivered when the gateway starts", j.Retry(ctx, seq)
		})
	})
}

func journalDrop(c *cli.Context) error {
	seqs, err := parseSeqs(c)
	if err != nil {
		return err
	}
	if len(seqs) == 0 {
		return fmt.Errorf("drop needs sequence numbers (see `ldapgate journal ls --dead`)")
	}
	return withJournal(c, func(j journalAPI, live bool) error {
		return eachRecord(c, seqs, func(ctx context.Context, seq uint64) (string, error) {
			return "dropped", j.Drop(ctx, seq)
		})
	})
}

// eachRecord applies fn to every record, reports each outcome, and fails
// if any failed.
func eachRecord(c *cli.Context, seqs []uint64, fn func(context.Context, uint64) (string, error)) error {
	failed := 0
	for _, seq := range seqs {
		done, err := fn(c.Context, seq)
		if err != nil {
			failed++
			fmt.Fprintf(c.App.ErrWriter, "record %d: %v\n", seq, err)
			continue
		}
		fmt.Fprintf(c.App.Writer, "record %d: %s\n", seq, done)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d records failed", failed, len(seqs))
	}
	return nil
}

// statsJSON is the stats output for scripts.
type statsJSON struct {
	Prepared             int     `json:"prepared"`
	Committed            int     `json:"committed"`
	Delivered            int     `json:"delivered"`
	Dead                 int     `json:"dead"`
	Backlog              int     `json:"backlog"`
	OldestPendingSeconds float64 `json:"oldestPendingSeconds"`
	OldestPendingSeq     uint64  `json:"oldestPendingSeq,omitempty"`
	LastSeq              uint64  `json:"lastSeq"`
}

func journalStats(c *cli.Context) error {
	return withJournal(c, func(j journalAPI, live bool) error {
		st, err := j.Stats()
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return writeJSON(c.App.Writer, statsJSON{
				Prepared: st.Prepared, Committed: st.Committed, Delivered: st.Delivered, Dead: st.Dead,
				Backlog: st.Backlog, OldestPendingSeconds: st.OldestPending.Seconds(), OldestPendingSeq: st.OldestPendingSeq,
				LastSeq: st.LastSeq,
			})
		}
		tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "prepared\t%d\n", st.Prepared)
		fmt.Fprintf(tw, "committed\t%d\n", st.Committed)
		fmt.Fprintf(tw, "delivered\t%d\n", st.Delivered)
		fmt.Fprintf(tw, "dead\t%d\n", st.Dead)
		fmt.Fprintf(tw, "backlog\t%d\n", st.Backlog)
		if st.OldestPendingSeq != 0 {
			fmt.Fprintf(tw, "oldest pending\t%s (record %d)\n", st.OldestPending.Round(time.Second), st.OldestPendingSeq)
		} else {
			fmt.Fprintf(tw, "oldest pending\t-\n")
		}
		fmt.Fprintf(tw, "last sequence\t%d\n", st.LastSeq)
		return tw.Flush()
	})
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
