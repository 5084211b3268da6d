import { DefaultAzureCredential } from "@azure/identity";
import {
  type BlockBlobClient,
  BlobServiceClient,
  type ContainerClient,
  SASProtocol,
  StorageSharedKeyCredential,
} from "@azure/storage-blob";
import type { Clock } from "@emprops/platform";
import type { GatewayConfig } from "../config.js";
import type { BlobRef } from "./blob-paths.js";
import {
  type ResponseHeaders,
  SharedKeySigner,
  type SasAccess,
  type UrlSigner,
  UserDelegationSigner,
} from "./url-signer.js";

/** Clock skew allowance: a URL is valid from a few minutes before it is made. */
const START_SKEW_MS = 5 * 60_000;

/** The storage account as the gateway uses it: two containers and a URL signer. */
export class BlobStorage {
  readonly userContainer: ContainerClient;
  readonly sharedContainer: ContainerClient;

  constructor(
    readonly service: BlobServiceClient,
    readonly signer: UrlSigner,
    containers: { user: string; shared: string },
    private readonly clock: Clock,
  ) {
    this.userContainer = service.getContainerClient(containers.user);
    this.sharedContainer = service.getContainerClient(containers.shared);
  }

  /** Wires the client and signer the configuration asks for. */
  static fromConfig(cfg: GatewayConfig, clock: Clock): BlobStorage {
    const s = cfg.storage;
    // Signed URLs name their protocol: https only, unless an emulator on http is allowed.
    const protocol = new URL(s.accountUrl).protocol === "https:" ? SASProtocol.Https : SASProtocol.HttpsAndHttp;
    const options = { userAgentOptions: { userAgentPrefix: "emprops-blob-gateway" } };
    if (s.auth === "shared-key") {
      const credential = new StorageSharedKeyCredential(s.accountName, s.accountKey);
      const service = new BlobServiceClient(s.accountUrl, credential, options);
      return new BlobStorage(
        service,
        new SharedKeySigner(credential, protocol),
        { user: cfg.userContainer, shared: cfg.sharedContainer },
        clock,
      );
    }
    const service = new BlobServiceClient(s.accountUrl, new DefaultAzureCredential(), options);
    return new BlobStorage(
      service,
      new UserDelegationSigner(service, s.accountName, protocol, () => clock.now()),
      { user: cfg.userContainer, shared: cfg.sharedContainer },
      clock,
    );
  }

  /** Creates both containers when missing (private: access only through signed URLs). */
  async ensureContainers(): Promise<void> {
    await Promise.all([this.userContainer.createIfNotExists(), this.sharedContainer.createIfNotExists()]);
  }

  /**
   * Lets browsers of these origins Put Block / Put Block List to signed URLs
   * and read the x-ms-* response headers: the account's Blob CORS rules are
   * replaced by one rule for them.
   */
  async allowBrowserUploads(origins: string[]): Promise<void> {
    await this.service.setProperties({
      cors: [
        {
          allowedOrigins: origins.join(","),
          allowedMethods: "PUT",
          allowedHeaders: "content-type,x-ms-*",
          exposedHeaders: "x-ms-*",
          maxAgeInSeconds: 3600,
        },
      ],
    });
  }

  containerOf(ref: BlobRef): ContainerClient {
    return ref.kind === "shared" ? this.sharedContainer : this.userContainer;
  }

  blob(ref: BlobRef): BlockBlobClient {
    return this.containerOf(ref).getBlockBlobClient(ref.path);
  }

  /**
   * A signed URL for one blob, valid from a little before now for
   * ttlSeconds; a read URL may name the response headers it answers with.
   */
  async signedUrl(
    ref: BlobRef,
    access: SasAccess,
    ttlSeconds: number,
    responseHeaders: ResponseHeaders = {},
  ): Promise<{ url: string; blobUrl: string; expiresOn: Date }> {
    const now = this.clock.now();
    // SAS times have whole seconds: round the expiry down so we never promise more than is signed.
    const expiresOn = new Date(Math.floor((now.getTime() + ttlSeconds * 1000) / 1000) * 1000);
    const blob = this.blob(ref);
    const query = await this.signer.sign({
      container: blob.containerName,
      path: ref.path,
      access,
      startsOn: new Date(now.getTime() - START_SKEW_MS),
      expiresOn,
      responseHeaders,
    });
    return { url: `${blob.url}?${query}`, blobUrl: blob.url, expiresOn };
  }
}
