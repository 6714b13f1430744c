package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
)

// manSection is where the pages go: user commands.
const manSection = 1

// genDocsCommand writes the man pages and the shell completion scripts from
// the command line's own definitions, so the packaged documentation cannot
// drift from the binary it ships with. `make man completion deb` run it;
// it is hidden because administrators have the results installed.
func genDocsCommand() *cli.Command {
	return &cli.Command{
		Name:   "gendocs",
		Usage:  "write the man pages and the bash/zsh completion scripts",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "man-dir", Usage: "write ldapgate.1 and ldapgate-COMMAND.1 into `DIR` (skipped when empty)"},
			&cli.StringFlag{Name: "completion-dir", Usage: "write ldapgate.bash and _ldapgate (zsh) into `DIR` (skipped when empty)"},
		},
		Action: func(c *cli.Context) error {
			if dir := c.String("man-dir"); dir != "" {
				if err := writeManPages(c.App, dir); err != nil {
					return err
				}
			}
			if dir := c.String("completion-dir"); dir != "" {
				if err := writeCompletions(c.App.Name, dir); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// documentedCommands are the commands that get a page of their own: the
// visible ones, without urfave/cli's built-in help.
func documentedCommands(app *cli.App) []*cli.Command {
	var out []*cli.Command
	for _, cmd := range app.VisibleCommands() {
		if cmd.Name != "help" {
			out = append(out, cmd)
		}
	}
	return out
}

// writeManPages writes ldapgate(1), which lists every command, and one
// page per command, ldapgate-serve(1) and so on.
func writeManPages(app *cli.App, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	commands := documentedCommands(app)
	var pageNames []string
	for _, cmd := range commands {
		pageNames = append(pageNames, app.Name+"-"+cmd.Name)
	}

	// The running App has urfave/cli's help command added; the page lists
	// the real ones.
	top := &cli.App{Name: app.Name, Usage: app.Usage, UsageText: app.UsageText, Description: app.Description,
		Flags: app.VisibleFlags(), Commands: commands}
	main, err := top.ToManWithSection(manSection)
	if err != nil {
		return fmt.Errorf("man page %s(%d): %w", app.Name, manSection, err)
	}
	if err := writePage(dir, app.Name, main, pageNames); err != nil {
		return err
	}
	for i, cmd := range commands {
		page, err := commandApp(app, cmd).ToManWithSection(manSection)
		if err != nil {
			return fmt.Errorf("man page %s(%d): %w", pageNames[i], manSection, err)
		}
		// The template calls a page's flags "GLOBAL OPTIONS"; on a
		// command's page they are that command's options.
		page = strings.Replace(page, ".SH GLOBAL OPTIONS", ".SH OPTIONS", 1)
		// The synopsis shows the command as typed, like git-commit(1)'s.
		page = strings.Replace(page, ".SH SYNOPSIS\n"+pageNames[i]+"\n", ".SH SYNOPSIS\n"+app.Name+" "+cmd.Name+"\n", 1)
		if err := writePage(dir, pageNames[i], page, []string{app.Name}); err != nil {
			return err
		}
	}
	return nil
}

// commandApp presents one command as an App, the unit urfave/cli renders
// as a man page: named ldapgate-CMD, its flags as the options and its
// subcommands (journal ls, show, ...) as the commands.
func commandApp(app *cli.App, cmd *cli.Command) *cli.App {
	usage := cmd.UsageText
	if usage == "" {
		usage = app.Name + " " + cmd.Name + " [OPTIONS]"
		if len(cmd.Subcommands) > 0 {
			usage = app.Name + " " + cmd.Name + " COMMAND [OPTIONS]"
		}
		if cmd.ArgsUsage != "" {
			usage += " " + cmd.ArgsUsage
		}
	}
	var subs []*cli.Command
	for _, s := range cmd.Subcommands {
		if !s.Hidden && s.Name != "help" {
			subs = append(subs, s)
		}
	}
	return &cli.App{
		Name:        app.Name + "-" + cmd.Name,
		Usage:       cmd.Usage,
		UsageText:   usage,
		Description: cmd.Description,
		Flags:       cmd.Flags,
		Commands:    subs,
	}
}

// writePage writes NAME.1 with a SEE ALSO section naming the related pages.
func writePage(dir, name, roff string, seeAlso []string) error {
	var b strings.Builder
	b.WriteString(strings.TrimRight(roff, "\n"))
	b.WriteString("\n.SH SEE ALSO\n")
	for i, other := range seeAlso {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, "\\fB%s\\fP(%d)", other, manSection)
	}
	b.WriteString("\n")
	path := filepath.Join(dir, fmt.Sprintf("%s.%d", name, manSection))
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("man page: %w", err)
	}
	return nil
}

// writeCompletions writes the bash and zsh scripts. Both ask the binary
// itself for the candidates (urfave/cli's --generate-bash-completion), so
// they always match the installed version's commands and flags.
func writeCompletions(prog, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("completion: %w", err)
	}
	files := map[string]string{
		prog + ".bash": bashCompletion(prog),
		"_" + prog:     zshCompletion(prog),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return fmt.Errorf("completion: %w", err)
		}
	}
	return nil
}

func bashCompletion(prog string) string {
	fn := "_" + strings.ReplaceAll(prog, "-", "_") + "_complete"
	return strings.NewReplacer("PROG", prog, "FUNC", fn).Replace(`# bash completion for PROG (generated by "PROG gendocs"; do not edit)

FUNC() {
  local cur words cword
  if declare -F _init_completion >/dev/null 2>&1; then
    _init_completion -n "=:" || return
  else
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
  fi
  # Everything typed before the current word, then the word itself when it
  # is a flag being completed, then the request for candidates.
  local -a request=("${words[@]:0:cword}")
  [[ "$cur" == -* ]] && request+=("$cur")
  local candidates
  candidates=$("${request[0]}" "${request[@]:1}" --generate-bash-completion 2>/dev/null) || return 0
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
  # No candidates: fall back to file names (configuration, password files).
  [[ ${#COMPREPLY[@]} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
  return 0
}

complete -o bashdefault -o default -F FUNC PROG
`)
}

func zshCompletion(prog string) string {
	fn := "_" + strings.ReplaceAll(prog, "-", "_")
	return strings.NewReplacer("PROG", prog, "FUNC", fn).Replace(`#compdef PROG
# zsh completion for PROG (generated by "PROG gendocs"; do not edit)

FUNC() {
  local -a candidates request
  local cur=${words[CURRENT]}
  request=("${(@)words[1,CURRENT-1]}")
  [[ "$cur" == -* ]] && request+=("$cur")
  candidates=("${(@f)$(${request[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n "${candidates[1]}" ]]; then
    # "name:description" lines are what _describe shows.
    _describe 'PROG' candidates
  else
    _files
  fi
}

FUNC "$@"
`)
}
