// turn-echo: pion's TURN client (github.com/pion/turn/v2, Debian's golang-github-pion-turn.v2-dev)
// against a TURN server, for the interop suites (test-support/src/pion.ts builds and runs it,
// offline: GOPATH=/usr/share/gocode, GO111MODULE=off, GOPROXY=off).
//
// It allocates a UDP relay, then writes -count messages to -peer (an echo peer) through the
// relayed connection, -interval apart: pion creates the permission on the first write and binds
// a channel (RFC 8656 §12), so after the first few Send indications the data flows as
// ChannelData. Every echo that comes back through the relay is counted. One JSON line on
// stdout says what happened; the exit code is 0 when every message came back.
package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"
)

type result struct {
	Relayed  string  `json:"relayed"`
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	RttP50Ms float64 `json:"rttP50Ms"`
	RttMaxMs float64 `json:"rttMaxMs"`
	Error    string  `json:"error,omitempty"`
}

func main() {
	server := flag.String("server", "", "TURN server HOST:PORT (UDP)")
	local := flag.String("local", "0.0.0.0", "local address of the client's socket")
	user := flag.String("user", "", "username")
	pass := flag.String("pass", "", "password")
	realm := flag.String("realm", "turnpike", "realm")
	peer := flag.String("peer", "", "echo peer HOST:PORT")
	count := flag.Int("count", 200, "messages")
	interval := flag.Duration("interval", 5*time.Millisecond, "time between messages")
	size := flag.Int("size", 100, "payload bytes (at least 12)")
	wait := flag.Duration("wait", 3*time.Second, "how long to wait for the last echoes")
	flag.Parse()

	out := result{}
	finish := func(err error) {
		if err != nil {
			out.Error = err.Error()
		}
		_ = json.NewEncoder(os.Stdout).Encode(out)
		if err != nil || out.Received != out.Sent {
			os.Exit(1)
		}
		os.Exit(0)
	}

	network := "udp4"
	if ip := net.ParseIP(*local); ip != nil && ip.To4() == nil {
		network = "udp6"
	}
	conn, err := net.ListenPacket(network, net.JoinHostPort(*local, "0"))
	if err != nil {
		finish(fmt.Errorf("listen: %w", err))
	}
	defer conn.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: *server,
		TURNServerAddr: *server,
		Conn:           conn,
		Username:       *user,
		Password:       *pass,
		Realm:          *realm,
		LoggerFactory:  logging.NewDefaultLoggerFactory(),
	})
	if err != nil {
		finish(fmt.Errorf("client: %w", err))
	}
	defer client.Close()
	if err = client.Listen(); err != nil {
		finish(fmt.Errorf("client listen: %w", err))
	}
	relayConn, err := client.Allocate()
	if err != nil {
		finish(fmt.Errorf("allocate: %w", err))
	}
	defer relayConn.Close()
	out.Relayed = relayConn.LocalAddr().String()
	peerAddr, err := net.ResolveUDPAddr(network, *peer)
	if err != nil {
		finish(fmt.Errorf("peer: %w", err))
	}

	var mu sync.Mutex
	seen := make(map[uint32]bool)
	var rtts []float64
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, rerr := relayConn.ReadFrom(buf)
			if rerr != nil {
				return
			}
			if n < 12 {
				continue
			}
			seq := binary.BigEndian.Uint32(buf[0:4])
			sentAt := int64(binary.BigEndian.Uint64(buf[4:12]))
			mu.Lock()
			if !seen[seq] {
				seen[seq] = true
				rtts = append(rtts, float64(time.Now().UnixNano()-sentAt)/1e6)
			}
			mu.Unlock()
		}
	}()

	msg := make([]byte, *size)
	if len(msg) < 12 {
		msg = make([]byte, 12)
	}
	for i := 0; i < *count; i++ {
		binary.BigEndian.PutUint32(msg[0:4], uint32(i))
		binary.BigEndian.PutUint64(msg[4:12], uint64(time.Now().UnixNano()))
		if _, err = relayConn.WriteTo(msg, peerAddr); err != nil {
			finish(fmt.Errorf("write %d: %w", i, err))
		}
		out.Sent++
		time.Sleep(*interval)
	}
	deadline := time.Now().Add(*wait)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := len(seen) == out.Sent
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	out.Received = len(seen)
	sort.Float64s(rtts)
	if len(rtts) > 0 {
		out.RttP50Ms = rtts[len(rtts)/2]
		out.RttMaxMs = rtts[len(rtts)-1]
	}
	mu.Unlock()
	finish(nil)
}
