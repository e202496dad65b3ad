// One-namenode, one-datanode HDFS for e2e tests: Hadoop's MiniDFSCluster (hadoop-minicluster
// from Maven Central). Compiled by e2e/services/hdfs.sh into the cache dir (not part of the
// product).
//
// usage: java -cp <libs>/*:<classes> WeirMiniDfs <baseDir> <namenodePort> <readyFile>
//
// The namenode listens on 127.0.0.1:<namenodePort>; the datanode and the web UIs take ephemeral
// ports (clients learn the datanode's address from the namenode). The first start formats
// <baseDir>; a later start on the same dir keeps the data (stop/start of the service script).
// <readyFile> is written once the cluster is active and out of safe mode, so the script's
// readiness check means "a client can write now", not only "the RPC port accepts".
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.concurrent.CountDownLatch;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

public final class WeirMiniDfs {
    private WeirMiniDfs() {}

    public static void main(final String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: WeirMiniDfs <baseDir> <namenodePort> <readyFile>");
            System.exit(2);
        }
        final File baseDir = new File(args[0]);
        final int port = Integer.parseInt(args[1]);
        final File ready = new File(args[2]);
        final boolean format = !new File(baseDir, "formatted").exists();

        final Configuration conf = new HdfsConfiguration();
        // Small blocks so multi-block files happen in tests without writing 128 MiB.
        conf.setLong("dfs.blocksize", 4L * 1024 * 1024);
        conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        // Tests write as whoever runs them; no permission checks on a throwaway cluster.
        conf.setBoolean("dfs.permissions.enabled", false);
        // Leases of killed writers are recovered by the client (recover_lease), but a short
        // hard limit also lets the namenode close abandoned files on its own.
        conf.setLong("dfs.namenode.lease-hard-limit-sec", 20);

        final MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf, baseDir)
                .nameNodePort(port)
                .nameNodeHttpPort(0)
                .numDataNodes(1)
                .format(format)
                .manageNameDfsDirs(true)
                .manageDataDfsDirs(true)
                .build();
        cluster.waitActive();
        if (format) {
            Files.write(new File(baseDir, "formatted").toPath(), new byte[0]);
        }

        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                cluster.shutdown();
            } catch (final Throwable t) {
                System.err.println("shutdown failed: " + t);
            } finally {
                stopped.countDown();
            }
        }));
        Files.write(ready.toPath(), ("hdfs://127.0.0.1:" + port + "\n").getBytes(StandardCharsets.UTF_8));
        System.out.println("WeirMiniDfs: namenode on 127.0.0.1:" + port + ", 1 datanode, data in " + baseDir);
        System.out.flush();
        stopped.await();
    }
}
