package netproxy

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
)

// Network is one proxy in front of each node of a cluster. The nodes name
// each other by their proxies' addresses (Network.Addr), so every byte
// between two nodes crosses the proxy of the node that was dialled, and a
// link A–B is the connections A dialled to B's proxy plus those B dialled
// to A's. The proxies tell senders apart by process (ProcessSource), so a
// test registers each node's process with SetPID, again after a restart.
type Network struct {
	mu      sync.Mutex
	proxies map[string]*Proxy
	pids    map[int]string
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{proxies: map[string]*Proxy{}, pids: map[int]string{}}
}

// Add starts node name's proxy, forwarding to target (where the node
// listens), and returns the address the others must use for it.
func (n *Network) Add(name, target string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.proxies[name]; ok {
		return "", fmt.Errorf("netproxy: node %q added twice", name)
	}
	p, err := Listen(target, Options{Source: ProcessSource(n.processes)})
	if err != nil {
		return "", err
	}
	n.proxies[name] = p
	return p.Addr(), nil
}

// processes is the current pid → node table.
func (n *Network) processes() map[int]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.pids)
}

// SetPID says node name runs as process pid (forgetting its former one).
func (n *Network) SetPID(name string, pid int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for p, nm := range n.pids {
		if nm == name {
			delete(n.pids, p)
		}
	}
	n.pids[pid] = name
}

// Addr is node name's proxy address ("" if unknown).
func (n *Network) Addr(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.proxies[name]; p != nil {
		return p.Addr()
	}
	return ""
}

// Proxy is node name's proxy (nil if unknown).
func (n *Network) Proxy(name string) *Proxy {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proxies[name]
}

func (n *Network) names() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Sorted(maps.Keys(n.proxies))
}

// Isolate cuts node name off from everyone, both ways, whoever dials
// (clients of the cluster port that are not nodes included).
func (n *Network) Isolate(name string) {
	n.Proxy(name).Cut()
	for _, other := range n.names() {
		if other != name {
			n.Proxy(other).Block(name, Both)
		}
	}
}

// Partition splits the nodes into the given groups: every link between
// two groups is cut both ways. A node in no group is isolated.
func (n *Network) Partition(groups ...[]string) {
	group := map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			group[name] = i + 1
		}
	}
	names := n.names()
	for _, a := range names {
		if group[a] == 0 {
			n.Isolate(a)
			continue
		}
		for _, b := range names {
			if a != b && group[b] != 0 && group[a] != group[b] {
				n.CutLink(a, b)
			}
		}
	}
}

// CutLink cuts the link between a and b both ways.
func (n *Network) CutLink(a, b string) {
	n.Proxy(b).Block(a, Both)
	n.Proxy(a).Block(b, Both)
}

// OneWay drops what from sends to to, on connections either of them
// dialled; to's messages still reach from.
func (n *Network) OneWay(from, to string) {
	n.Proxy(to).Block(from, ToTarget)
	n.Proxy(from).Block(to, FromTarget)
}

// HealAll removes every rule of every proxy.
func (n *Network) HealAll() {
	for _, name := range n.names() {
		n.Proxy(name).Heal()
	}
}

// Close closes every proxy.
func (n *Network) Close() {
	for _, name := range n.names() {
		n.Proxy(name).Close()
	}
}

// String describes the proxies, for logs.
func (n *Network) String() string {
	var s string
	for _, name := range n.names() {
		p := n.Proxy(name)
		s += fmt.Sprintf("%s: %s -> %s %+v; ", name, p.Addr(), p.Target(), p.Stats())
	}
	return s
}

// ProcessSource names an accepted loopback connection by the process that
// dialled it: the owner of the socket at the connection's far end, looked
// up in /proc among the processes of pids (pid → name). It names the
// connection "" when no listed process owns it.
func ProcessSource(pids func() map[int]string) func(c net.Conn) string {
	return func(c net.Conn) string {
		remote, ok1 := c.RemoteAddr().(*net.TCPAddr)
		local, ok2 := c.LocalAddr().(*net.TCPAddr)
		if !ok1 || !ok2 {
			return ""
		}
		pid, err := socketOwner(remote, local, slices.Collect(maps.Keys(pids())))
		if err != nil || pid == 0 {
			return ""
		}
		return pids()[pid]
	}
}
