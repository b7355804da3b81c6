package deploy_test

import (
	"encoding/xml"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
)

// clusterXML is the part of compose/cluster/cluster.xml the check reads.
type clusterXML struct {
	Clusters struct {
		Any []struct {
			XMLName xml.Name
			Secret  struct {
				FromEnv string `xml:"from_env,attr"`
			} `xml:"secret"`
			Shards []struct {
				InternalReplication bool `xml:"internal_replication"`
				Replicas            []struct {
					Host string `xml:"host"`
					Port int    `xml:"port"`
				} `xml:"replica"`
			} `xml:"shard"`
		} `xml:",any"`
	} `xml:"remote_servers"`
	Macros struct {
		Cluster string `xml:"cluster"`
		Shard   struct {
			FromEnv string `xml:"from_env,attr"`
		} `xml:"shard"`
		Replica struct {
			FromEnv string `xml:"from_env,attr"`
		} `xml:"replica"`
	} `xml:"macros"`
	Keeper []struct {
		Host string `xml:"host"`
		Port int    `xml:"port"`
	} `xml:"zookeeper>node"`
	UserDirectories struct {
		Replicated *struct {
			Path string `xml:"zookeeper_path"`
		} `xml:"replicated"`
	} `xml:"user_directories"`
}

// TestComposeCluster: the cluster variant of the compose stack agrees with
// itself: 2 shards x 2 replicas in remote_servers, each a compose service
// with its own (shard, replica) macros and the cluster config mounted; the
// ehrwatch services name that cluster and every server, and their config
// validates; Keeper is where the servers look for it. It cannot start the
// stack (no Docker Compose here): deployments/README.md says so.
func TestComposeCluster(t *testing.T) {
	var cx clusterXML
	if err := xml.Unmarshal([]byte(readFile(t, "compose/cluster/cluster.xml")), &cx); err != nil {
		t.Fatal(err)
	}
	if len(cx.Clusters.Any) != 1 {
		t.Fatalf("remote_servers: want one cluster, got %d", len(cx.Clusters.Any))
	}
	cl := cx.Clusters.Any[0]
	name := cl.XMLName.Local
	if cx.Macros.Cluster != name {
		t.Errorf("macro cluster %q, remote_servers %q", cx.Macros.Cluster, name)
	}
	if cl.Secret.FromEnv == "" {
		t.Error("remote_servers: no <secret>: Distributed queries would run on the shards as the default user")
	}
	if cx.UserDirectories.Replicated == nil {
		t.Error("user_directories: access entities are not replicated, so access.sql would hold on one server only")
	}
	var hosts []string
	if len(cl.Shards) != 2 {
		t.Errorf("want 2 shards, got %d", len(cl.Shards))
	}
	for i, sh := range cl.Shards {
		if !sh.InternalReplication {
			t.Errorf("shard %d: internal_replication must be true with Replicated tables (else every replica gets each row twice)", i+1)
		}
		if len(sh.Replicas) != 2 {
			t.Errorf("shard %d: want 2 replicas, got %d", i+1, len(sh.Replicas))
		}
		for _, r := range sh.Replicas {
			hosts = append(hosts, fmt.Sprintf("%s:%d", r.Host, r.Port))
		}
	}

	doc := yamlDoc(t, "compose/cluster.yml")
	services := get(doc, "services").(map[string]any)
	macros := map[string]string{}
	for i, sh := range cl.Shards {
		for _, r := range sh.Replicas {
			svc, ok := services[r.Host]
			if !ok {
				t.Errorf("remote_servers names %s, which compose/cluster.yml does not define", r.Host)
				continue
			}
			env := get(svc, "environment")
			shard, replica := str(get(env, cx.Macros.Shard.FromEnv)), str(get(env, cx.Macros.Replica.FromEnv))
			if shard != fmt.Sprintf("%02d", i+1) {
				t.Errorf("%s: shard macro %q, but remote_servers puts it in shard %d", r.Host, shard, i+1)
			}
			if prev, dup := macros[shard+"/"+replica]; dup || replica == "" {
				t.Errorf("%s: replica macro %q is empty or repeats %s's", r.Host, replica, prev)
			}
			macros[shard+"/"+replica] = r.Host
			if !slices.ContainsFunc(strs(get(svc, "volumes")), func(v string) bool {
				return strings.HasPrefix(v, "./compose/cluster/cluster.xml:/etc/clickhouse-server/config.d/")
			}) {
				t.Errorf("%s: does not mount compose/cluster/cluster.xml into config.d", r.Host)
			}
		}
	}
	for _, k := range cx.Keeper {
		if _, ok := services[k.Host]; !ok {
			t.Errorf("zookeeper node %s is not a compose service", k.Host)
		}
		if !strings.Contains(readFile(t, "compose/cluster/keeper.xml"), fmt.Sprintf("<tcp_port>%d</tcp_port>", k.Port)) {
			t.Errorf("keeper.xml does not listen on %d", k.Port)
		}
	}

	for _, svc := range []string{"migrate", "run", "serve"} {
		env := get(services, svc, "environment")
		if got := str(get(env, "EHRWATCH_CLICKHOUSE_CLUSTER")); got != name {
			t.Errorf("%s: EHRWATCH_CLICKHOUSE_CLUSTER %q, want %q", svc, got, name)
		}
		addrs := strings.Split(str(get(env, "EHRWATCH_CLICKHOUSE_ADDRS")), ",")
		sort.Strings(addrs)
		want := slices.Clone(hosts)
		sort.Strings(want)
		if !slices.Equal(addrs, want) {
			t.Errorf("%s: addrs %v, want every server %v", svc, addrs, want)
		}
	}
	env := fileEnv(t, "compose/ehrwatch.yaml")
	env = append(env, "EHRWATCH_CLICKHOUSE_CLUSTER="+name, "EHRWATCH_CLICKHOUSE_ADDRS="+strings.Join(hosts, ","))
	validateConfig(t, "compose/ehrwatch.yaml", env...)
}
