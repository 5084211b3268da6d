import {
  create,
  fromBinary,
  toBinary,
  type DescEnum,
  type DescFile,
  type DescMessage,
  type DescService,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { reflectionV1, reflectionV1alpha } from "@emprops/contracts";

type Request = reflectionV1.ServerReflectionRequest;
type Response = reflectionV1.ServerReflectionResponse;

/** Index of the files, symbols and services a server exposes. */
class DescriptorIndex {
  readonly files = new Map<string, DescFile>();
  readonly symbols = new Map<string, DescFile>();

  constructor(readonly services: DescService[]) {
    for (const service of services) this.addFile(service.file);
  }

  private addFile(file: DescFile): void {
    if (this.files.has(file.name + ".proto")) return;
    this.files.set(file.name + ".proto", file);
    for (const dep of file.dependencies) this.addFile(dep);
    for (const service of file.services) {
      this.symbols.set(service.typeName, file);
      for (const method of service.methods) this.symbols.set(`${service.typeName}.${method.name}`, file);
    }
    const addMessage = (m: DescMessage) => {
      this.symbols.set(m.typeName, file);
      m.nestedMessages.forEach(addMessage);
      m.nestedEnums.forEach(addEnum);
    };
    const addEnum = (e: DescEnum) => this.symbols.set(e.typeName, file);
    file.messages.forEach(addMessage);
    file.enums.forEach(addEnum);
  }

  /** The file and its transitive dependencies, dependencies first. */
  withDependencies(file: DescFile): Uint8Array[] {
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    const visit = (f: DescFile) => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      f.dependencies.forEach(visit);
      out.push(toBinary(FileDescriptorProtoSchema, f.proto));
    };
    visit(file);
    return out.reverse();
  }
}

function answer(index: DescriptorIndex, req: Request): Response {
  const base = { validHost: req.host, originalRequest: req };
  const files = (file: DescFile | undefined, what: string): Response =>
    file
      ? create(reflectionV1.ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: "fileDescriptorResponse",
            value: { fileDescriptorProto: index.withDependencies(file) },
          },
        })
      : error(`${what} not found`);
  const error = (message: string): Response =>
    create(reflectionV1.ServerReflectionResponseSchema, {
      ...base,
      messageResponse: { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: message } },
    });
  const q = req.messageRequest;
  switch (q.case) {
    case "listServices":
      return create(reflectionV1.ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "listServicesResponse",
          value: { service: index.services.map((s) => ({ name: s.typeName })) },
        },
      });
    case "fileByFilename":
      return files(index.files.get(q.value), `file ${q.value}`);
    case "fileContainingSymbol":
      return files(index.symbols.get(q.value), `symbol ${q.value}`);
    case "fileContainingExtension":
      return error(`no extensions of ${q.value.containingType}`);
    case "allExtensionNumbersOfType":
      return index.symbols.has(q.value)
        ? create(reflectionV1.ServerReflectionResponseSchema, {
            ...base,
            messageResponse: { case: "allExtensionNumbersResponse", value: { baseTypeName: q.value } },
          })
        : error(`type ${q.value} not found`);
    default:
      return create(reflectionV1.ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: "errorResponse",
          value: { errorCode: Code.InvalidArgument, errorMessage: "empty reflection request" },
        },
      });
  }
}

/**
 * Server reflection (grpc.reflection.v1 and v1alpha, same wire format) for
 * the given services, so grpcurl and buf curl can discover them.
 */
export function registerReflection(router: ConnectRouter, services: DescService[]): void {
  const all = [...services, reflectionV1.ServerReflection, reflectionV1alpha.ServerReflection];
  const index = new DescriptorIndex(all);
  router.service(reflectionV1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) yield answer(index, req);
    },
  });
  router.service(reflectionV1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        const v1 = fromBinary(
          reflectionV1.ServerReflectionRequestSchema,
          toBinary(reflectionV1alpha.ServerReflectionRequestSchema, req),
        );
        const res = answer(index, v1);
        yield fromBinary(
          reflectionV1alpha.ServerReflectionResponseSchema,
          toBinary(reflectionV1.ServerReflectionResponseSchema, res),
        );
      }
    },
  });
}
