// Command favabench measures favaproxy against the Fava emulator in one run:
// concurrent writes straight, through favaproxy with and without group
// commit; reads straight, through favaproxy, through a bare Go reverse
// proxy, through the leanest net/http forwarder and a TCP relay (the floors
// under any Go proxy) and through nginx, in front of a static, the emulator
// and a Fava-speed upstream, with each proxy's CPU time per request; favaproxy's peak memory; and a normal write among
// hostile clients. It prints a table with the ratios and their targets, then
// one JSON line per phase.
//
//	go run ./internal/loadtest/cmd/favabench [-quick]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/favaproxy/favaproxy/internal/loadtest"
)

func main() {
	var o loadtest.Options
	var phases, upstreams string
	var quiet bool
	flag.BoolVar(&o.Quick, "quick", false, "shrink every phase for a smoke test (8 users × 2 writes, 2 s read runs on 4 connections)")
	flag.StringVar(&o.Dir, "dir", "", "work directory that keeps ledgers, binaries, nginx files and every process's output (default: a temporary directory, removed)")
	flag.StringVar(&o.Fakefava, "fakefava", "", "prebuilt fakefava binary (default: build it)")
	flag.StringVar(&o.Favaproxy, "favaproxy", "", "prebuilt favaproxy binary (default: build it)")
	flag.StringVar(&o.Benchserve, "benchserve", "", "prebuilt benchserve binary, the bare Go proxy and static upstream (default: build it)")
	flag.StringVar(&o.Nginx, "nginx", "", `nginx binary (default: look it up; "none" skips nginx)`)
	flag.StringVar(&o.Wrk, "wrk", "", `wrk binary (default: look it up; "none" uses the built-in Go client)`)
	flag.IntVar(&o.Users, "users", 0, "concurrent writers (default 16, quick 8)")
	flag.IntVar(&o.WritesPerUser, "writes", 0, "add_entries calls per writer (default 25, quick 2)")
	flag.IntVar(&o.Transactions, "transactions", 0, "transactions in the write ledger (default 1000)")
	flag.DurationVar(&o.ReloadCost, "reload-cost", 0, "emulator reload cost per transaction for writes (default 130µs)")
	flag.DurationVar(&o.ReadDuration, "read-duration", 0, "length of each read run, per setup, route and upstream (default 10s, quick 1s)")
	flag.StringVar(&upstreams, "read-upstreams", "", "comma-separated upstreams of the read phase: static,emulator,fava-speed (default all; quick static,fava-speed)")
	flag.IntVar(&o.GoMaxProcs, "gomaxprocs", 0, "GOMAXPROCS of favaproxy and of the bare Go proxy in the read phase (default: Go's, the number of cores)")
	flag.DurationVar(&o.RequestCost, "request-cost", 0, "CPU time the fava-speed upstream burns per request (default 400µs)")
	flag.IntVar(&o.ReadConnections, "connections", 0, "read connections (default 16, quick 4)")
	flag.IntVar(&o.ReadThreads, "threads", 0, "wrk threads (default 2, or 1 with 2 cores or fewer; quick 1)")
	flag.IntVar(&o.SlowLoris, "slowloris", 0, "slow-loris connections in the hostile phase (default 200)")
	flag.Int64Var(&o.BigBody, "big-body", 0, "size in bytes of the oversized body in the hostile phase (default 100 MiB)")
	flag.StringVar(&phases, "phases", "", "comma-separated phases to run: writes,reads,hostile (default all)")
	flag.BoolVar(&quiet, "q", false, "no progress lines on stderr")
	flag.Parse()
	if upstreams != "" {
		o.ReadUpstreams = strings.Split(upstreams, ",")
	}
	if phases != "" {
		o.Phases = strings.Split(phases, ",")
	}
	if !quiet {
		o.Log = os.Stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	r, err := loadtest.Run(ctx, o)
	if r != nil {
		r.WriteTable(os.Stdout)
		fmt.Println()
		r.WriteJSON(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "favabench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "favabench: done in %v\n", time.Since(start).Round(time.Second))
}
