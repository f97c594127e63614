// A grpc-go server instrumented by go-grpc-prometheus (with the handling
// time histogram). Serves revertname.RevertName/RevertName (an empty name
// is InvalidArgument) and timeservice.Time/WhatTimeIs, each after 1-10 ms.
// Binds the ports given (0: any free port) on 127.0.0.1 and prints
// `ready grpc=PORT metrics=PORT` once both listen.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"time"

	grpc_prometheus "github.com/grpc-ecosystem/go-grpc-prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"conformance/revertname"
	"conformance/timeservice"
)

func pause() {
	time.Sleep(time.Millisecond + time.Duration(rand.Int63n(int64(9*time.Millisecond))))
}

type revert struct {
	revertname.UnimplementedRevertNameServer
}

func (revert) RevertName(_ context.Context, r *revertname.RevertNameRequest) (*revertname.RevertNameReply, error) {
	pause()
	if r.Name == "" {
		return nil, status.Error(codes.InvalidArgument, "name is empty")
	}
	b := []rune(r.Name)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return &revertname.RevertNameReply{Reverted: string(b)}, nil
}

type clock struct {
	timeservice.UnimplementedTimeServer
}

func (clock) WhatTimeIs(context.Context, *timeservice.WhatTimeIsRequest) (*timeservice.WhatTimeIsReply, error) {
	pause()
	now := time.Now()
	return &timeservice.WhatTimeIsReply{Time: now.UTC().Format("15:04:05"), UnixMs: now.UnixMilli()}, nil
}

func listen(port int) net.Listener {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		log.Fatal(err)
	}
	return l
}

func main() {
	port := flag.Int("port", 0, "gRPC port")
	metricsPort := flag.Int("metrics-port", 0, "metrics port")
	flag.Parse()
	grpc_prometheus.EnableHandlingTimeHistogram()
	s := grpc.NewServer(
		grpc.UnaryInterceptor(grpc_prometheus.UnaryServerInterceptor),
		grpc.StreamInterceptor(grpc_prometheus.StreamServerInterceptor),
	)
	revertname.RegisterRevertNameServer(s, &revert{})
	timeservice.RegisterTimeServer(s, &clock{})
	grpc_prometheus.Register(s)
	gl, ml := listen(*port), listen(*metricsPort)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	go func() { log.Fatal(http.Serve(ml, mux)) }()
	fmt.Fprintf(os.Stdout, "ready grpc=%d metrics=%d\n", gl.Addr().(*net.TCPAddr).Port, ml.Addr().(*net.TCPAddr).Port)
	log.Fatal(s.Serve(gl))
}
