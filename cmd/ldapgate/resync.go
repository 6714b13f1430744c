package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/ldapgate/ldapgate/gateway/mirror"
	"github.com/ldapgate/ldapgate/store"
)

func resyncCommand() *cli.Command {
	settings := serveSettings()
	flags := []cli.Flag{configFlag(),
		&cli.BoolFlag{Name: "dry-run", Usage: "print the difference as the CLI commands that would close it, send nothing"},
		&cli.BoolFlag{Name: "remove-extra", Usage: "remove Axigen groups the directory does not have, and disable (or, with --on-account-delete, remove or keep) such accounts, never postmaster or a protected account (otherwise they are only reported)"},
		&cli.IntFlag{Name: "workers", Value: 8, Usage: "entries compared and applied in parallel"},
	}
	for _, s := range settings {
		flags = append(flags, s.flag)
	}
	return &cli.Command{
		Name:  "resync",
		Usage: "bring Axigen into agreement with the directory's accounts and groups",
		Description: `Reads every account and group under the configured bases (paged search),
compares each with Axigen (LIST/SHOW) and applies the difference. Takes the
same settings as serve (--config, LDAPGATE_*, flags); the gateway may be
running meanwhile. Accounts and groups that Axigen has and the directory does
not are reported; with --remove-extra such groups are removed and such
accounts get the --on-account-delete action (disable by default: the mail is
kept), except postmaster and the --protected-account names, and never an
account whose name an entry has. With --dry-run, each account that would be
disabled or removed is printed with the reason. The accounts this command
disables are not in the running gateway's table of disabled accounts: no
grace runs for them and the gateway never enables them again. Every change
to an account is in the audit log (--audit-log).`,
		Flags: flags,
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c, settings)
			if err != nil {
				return err
			}
			if !cfg.Mirror.enabled() {
				return errors.New("resync needs the Axigen settings: --axigen, --axigen-domain, --account-base, --service-dn (see ldapgate resync --help)")
			}
			log := newLogger(cfg.Log, c.App.ErrWriter)
			return runResync(c.Context, &cfg, log, c.App.Writer, c.App.ErrWriter, mirror.ResyncOptions{
				DryRun: c.Bool("dry-run"), RemoveExtra: c.Bool("remove-extra"), Workers: c.Int("workers"),
			})
		},
	}
}

func runResync(ctx context.Context, cfg *Config, log *slog.Logger, out, progressOut io.Writer, opts mirror.ResyncOptions) error {
	// What --remove-extra and the locks do to accounts goes to the audit
	// log, as serve's deliveries do.
	audit, closeAudit, err := openAuditLog(cfg.Mirror.AuditLog)
	if err != nil {
		return err
	}
	defer closeAudit()
	m, closeMirror, err := cfg.buildMirror(nil, log, audit, nil)
	if err != nil {
		return err
	}
	defer closeMirror()
	p := newProgress(progressOut)
	opts.Progress = p.update
	if opts.Pending == nil {
		opts.Pending = func(context.Context) ([]*store.Record, error) { return undelivered(cfg.DataDir, log) }
	}
	start := time.Now()
	rep, err := m.Resync(ctx, opts)
	p.finish()
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	if opts.DryRun {
		for _, plan := range rep.Plans {
			fmt.Fprintf(out, "# %s\n", plan.Object)
			for _, line := range plan.Lines() {
				fmt.Fprintf(out, "%s\n", line)
			}
		}
	}
	verb := "brought in line"
	if opts.DryRun {
		verb = "would change"
	}
	fmt.Fprintf(out, "resync: %d accounts and %d groups in the directory; %s %d in Axigen; %s\n",
		rep.Accounts, rep.Groups, verb, rep.Changed, time.Since(start).Round(time.Millisecond))
	if len(rep.ExtraActions) == 0 {
		for _, a := range rep.ExtraAccounts {
			fmt.Fprintf(out, "extra account in Axigen (not in the directory): %s\n", a)
		}
	}
	for _, a := range rep.ExtraActions {
		fmt.Fprintf(out, "extra account in Axigen, %s: %s (%s)\n", actionNote(a.Action, opts.DryRun), a.Account, a.Reason)
	}
	for _, e := range rep.Pending {
		fmt.Fprintf(out, "left to the gateway's journal (a change not delivered yet is to bring it): %s\n", e)
	}
	for _, g := range rep.ExtraGroups {
		fmt.Fprintf(out, "extra group in Axigen (not in the directory)%s: %s\n", removedNote(rep), g)
	}
	for _, a := range rep.Locked {
		note := "disabled in Axigen"
		if opts.DryRun {
			note = "would be disabled in Axigen"
		}
		fmt.Fprintf(out, "account disabled or locked in the directory, %s: %s\n", note, a)
	}
	for _, a := range rep.Unlocked {
		note := "enabled in Axigen"
		if opts.DryRun {
			note = "would be enabled in Axigen"
		}
		fmt.Fprintf(out, "account no longer disabled or locked in the directory, %s: %s\n", note, a)
	}
	for _, f := range rep.Incomplete {
		fmt.Fprintf(out, "synced but for a value: %s\n", f)
	}
	for _, f := range rep.Failed {
		fmt.Fprintf(out, "not synced: %s\n", f)
	}
	if len(rep.Failed) > 0 {
		return fmt.Errorf("%d entries could not be brought in line", len(rep.Failed))
	}
	return nil
}

// actionNote says what was, or with a dry run would be, done to an extra
// account.
func actionNote(action string, dryRun bool) string {
	done := map[string]string{"disable": "disabled", "remove": "removed", "keep": "kept"}[action]
	if dryRun {
		return "would be " + done
	}
	return done
}

func removedNote(rep *mirror.ResyncReport) string {
	if rep.Removed {
		return ", removed"
	}
	return ""
}

// progress draws a bar with counts and time left on a terminal, and plain
// lines every few seconds otherwise.
type progress struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu       sync.Mutex
	last     time.Time
	lastLine string
}

func newProgress(w io.Writer) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	// The first line waits for one interval: an estimate from the first
	// few entries says nothing.
	now := time.Now()
	return &progress{w: w, tty: tty, start: now, last: now}
}

func (p *progress) update(done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 100 * time.Millisecond
	}
	if done != total && now.Sub(p.last) < every {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start)
	left := "?"
	if done > 0 {
		left = (time.Duration(float64(elapsed) / float64(done) * float64(total-done))).Round(time.Second).String()
	}
	pct := 100
	if total > 0 {
		pct = done * 100 / total
	}
	if p.tty {
		const width = 30
		bar := strings.Repeat("=", pct*width/100) + strings.Repeat(" ", width-pct*width/100)
		p.lastLine = fmt.Sprintf("\r[%s] %d/%d %3d%% about %s left ", bar, done, total, pct, left)
		fmt.Fprint(p.w, p.lastLine)
		return
	}
	fmt.Fprintf(p.w, "resync: %d/%d entries (%d%%), about %s left\n", done, total, pct, left)
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.lastLine != "" {
		fmt.Fprintln(p.w)
	}
}

// undelivered lists the records the gateway whose data folder is dataDir
// has not delivered yet (prepared, committed, dead): through its admin
// socket while it runs (it holds the journal), else from its journal;
// none when it has no journal yet. The resync leaves their entries to
// them, and their names alone.
func undelivered(dataDir string, log *slog.Logger) ([]*store.Record, error) {
	states := store.Filter{States: []store.State{store.StatePrepared, store.StateCommitted, store.StateDead}}
	j, err := openStoppedJournal(dataDir, log)
	switch {
	case errors.Is(err, store.ErrNoJournal):
		return nil, nil
	case errors.Is(err, store.ErrLocked):
		remote, ok := newRemoteJournal(dataDir)
		if !ok {
			return nil, fmt.Errorf("the journal in %s is in use and no gateway answers on %s: "+
				"a gateway starting or stopping; try again in a moment", dataDir, adminSocket(dataDir))
		}
		return remote.List(states)
	case err != nil:
		return nil, err
	}
	defer j.Close()
	return j.List(states)
}
