/**
 * The deployable stack, packaged offline (osls, no AWS credentials, no login) and checked in
 * its generated CloudFormation: routes, IAM scoping, bucket and table settings, bundle budget,
 * and a bundle that a fresh Node process can load and answer an event with.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { packageStack, type Resource, root } from './package.js';

const run = promisify(execFile);
/** The per-function bundle budget: JavaScript loaded by the function, source maps excluded. */
const BUNDLE_BUDGET = 1024 * 1024;

const FUNCTIONS: Record<string, { routes: string[] }> = {
  Read: { routes: ['GET /{proxy+}', 'HEAD /{proxy+}'] },
  Upload: { routes: ['POST /v2/{proxy+}', 'POST /auth/token'] },
  Chunk: { routes: ['PATCH /v2/{proxy+}'] },
  Finish: { routes: ['PUT /v2/{proxy+}'] },
  Delete: { routes: ['DELETE /v2/{proxy+}'] },
  Purge: { routes: [] },
  Gc: { routes: [] },
};

describe('deployable stack (osls package, offline)', () => {
  let out: string;
  let scratch: string;
  let resources: Record<string, Resource>;
  let template: any;

  before(async () => {
    // No credentials anywhere: packaging must not need an AWS account.
    ({ dir: out, scratch, template } = await packageStack());
    resources = template.Resources;
  });
  after(() => rm(scratch, { recursive: true, force: true }));

  it("keeps the build directories osls leaves behind in the test run's temporary directory, not in /tmp", async () => {
    // serverless-esbuild builds each function in <os.tmpdir()>/<function>-<pid>-<time>-<hex> and
    // never removes it: packageStack points the child's TMPDIR next to the package directory.
    const left = (await readdir(join(scratch, 'tmp'))).filter((d) => /^(read|upload|chunk|finish|delete|purge|gc)-\d+-\d+-[0-9a-f]+$/.test(d));
    assert.deepEqual(left.map((d) => d.split('-')[0]).sort(), Object.keys(FUNCTIONS).map((n) => n.toLowerCase()).sort());
  });

  const ofType = (type: string) => Object.entries(resources).filter(([, r]) => r.Type === type);

  it('routes every method family to its own function, with the greedy path the handler dispatches on', () => {
    const routes = ofType('AWS::ApiGatewayV2::Route').map(([, r]) => r.Properties);
    const target = (routeKey: string) => {
      const route = routes.find((p) => p.RouteKey === routeKey);
      assert.ok(route, `route ${routeKey} exists`);
      const integration = route.Target['Fn::Join'][1][1].Ref as string;
      const props = resources[integration]!.Properties;
      assert.equal(props.IntegrationType, 'AWS_PROXY');
      assert.equal(props.PayloadFormatVersion, '2.0');
      return props.IntegrationUri['Fn::GetAtt'][0] as string;
    };
    for (const [name, { routes: keys }] of Object.entries(FUNCTIONS)) {
      for (const key of keys) assert.equal(target(key), `${name}LambdaFunction`, key);
    }
    assert.equal(routes.length, Object.values(FUNCTIONS).flatMap((f) => f.routes).length, 'no other routes');
  });

  it('runs Node 22 on arm64 within API Gateway timeouts, configured for Lambda limits', () => {
    for (const name of Object.keys(FUNCTIONS)) {
      const fn = resources[`${name}LambdaFunction`]!.Properties;
      assert.equal(fn.Runtime, 'nodejs22.x');
      assert.deepEqual(fn.Architectures, ['arm64']);
      assert.ok(fn.Timeout <= (name === 'Purge' || name === 'Gc' ? 900 : 29), `${name} timeout`);
      assert.ok(fn.MemorySize >= 256, `${name} memory`);
      const env = fn.Environment.Variables;
      assert.equal(env.SKIFF_STORAGE, 's3');
      assert.deepEqual(env.S3_BUCKET, { Ref: 'BlobBucket' });
      assert.deepEqual(env.DYNAMODB_TABLE, { Ref: 'MetadataTable' });
      assert.equal(env.SKIFF_MAX_CHUNK_BYTES, '4400000');
      assert.equal(env.SKIFF_REDIRECT, 'true');
      assert.equal(env.SKIFF_HASH_THREAD, 'false');
      assert.equal(env.SKIFF_UPLOAD_TTL_SECONDS, '604800');
      assert.equal(env.SKIFF_AUTH, 'required', 'a deployed stack authenticates by default');
      assert.equal(env.SKIFF_TOKEN_KEYS_PARAMETER, '/skiff/ci/token-keys');
      assert.equal(env.SKIFF_TOKEN_KEYS, undefined, 'no key material in the function configuration');
      assert.equal(fn.FunctionName, `skiff-ci-${name.toLowerCase()}`, 'stage-aware names');
    }
    const stage = ofType('AWS::ApiGatewayV2::Stage')[0]![1].Properties;
    assert.ok(stage.DefaultRouteSettings.ThrottlingRateLimit > 0);
    assert.ok(stage.DefaultRouteSettings.ThrottlingBurstLimit > 0);
  });

  it("sets the token realm from the API's own URL, never from request headers", () => {
    assert.equal(resources.HttpApi?.Type, 'AWS::ApiGatewayV2::Api');
    for (const name of Object.keys(FUNCTIONS)) {
      const env = resources[`${name}LambdaFunction`]!.Properties.Environment.Variables;
      assert.deepEqual(env.SKIFF_AUTH_REALM, { 'Fn::Sub': 'https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/auth/token' }, name);
    }
  });

  it('grants each function least privilege: no wildcard action or resource, scoped to the bucket, the table and its log group', () => {
    for (const name of Object.keys(FUNCTIONS)) {
      const fn = resources[`${name}LambdaFunction`]!.Properties;
      assert.deepEqual(fn.Role, { 'Fn::GetAtt': [`${name}Role`, 'Arn'] });
      const role = resources[`${name}Role`]!.Properties;
      assert.equal(role.ManagedPolicyArns, undefined, 'no managed policies (they grant logs:* on *)');
      assert.deepEqual(role.AssumeRolePolicyDocument.Statement[0].Principal, { Service: ['lambda.amazonaws.com'] });
      const statements = role.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
      for (const st of statements) {
        const actions = [st.Action].flat();
        assert.ok(actions.every((a: string) => !a.includes('*')), `${name}: ${actions}`);
        const resourcesOf = [st.Resource].flat();
        for (const res of resourcesOf) {
          const text = JSON.stringify(res);
          assert.notEqual(res, '*', `${name}: wildcard resource`);
          const scoped =
            /BlobBucket\.Arn|"BlobBucket","Arn"/.test(text) ||
            /"MetadataTable","Arn"/.test(text) ||
            text.includes('${MetadataTable.Arn}/index/') ||
            text.includes(`log-group:/aws/lambda/skiff-ci-${name.toLowerCase()}:*`) ||
            text.includes(':parameter/skiff/ci/token-keys');
          assert.ok(scoped, `${name}: ${text} is not the bucket, the table, the token keys or its own log group`);
        }
        if (actions.some((a: string) => a.startsWith('logs:'))) assert.deepEqual(actions.sort(), ['logs:CreateLogStream', 'logs:PutLogEvents']);
      }
      const writes = (st: any) => [st.Action].flat().filter((a: string) => /^(s3|dynamodb):.*(Put|Delete|Update|Abort)/.test(a));
      // Every HTTP function authorizes requests: it reads the token keys, users and grants
      // (GetItem and Query, only under USERS and USER#), and counts failed logins (only under
      // AUTHFAIL#). A function missing one of these fails every authenticated request.
      if (name !== 'Purge' && name !== 'Gc') {
        const leading = (st: any) => st.Condition?.['ForAllValues:StringLike']?.['dynamodb:LeadingKeys'];
        const principals = statements.find((st: any) => JSON.stringify(leading(st)) === '["USERS","USER#*"]');
        assert.deepEqual([principals?.Action].flat().sort(), ['dynamodb:GetItem', 'dynamodb:Query'], `${name}: reads users and grants`);
        const counting = statements.find((st: any) => JSON.stringify(leading(st)) === '["AUTHFAIL#*"]');
        assert.deepEqual([counting?.Action].flat().sort(), ['dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem'], `${name}: counts failed logins`);
        assert.ok(statements.some((st: any) => [st.Action].flat().includes('ssm:GetParameter')), `${name}: reads the token keys`);
        // The Delete function also marks garbage candidates for GC (PutItem, only under GC#).
        assert.deepEqual(statements.map(leading).filter(Boolean).flat().sort(), [...['AUTHFAIL#*', 'USER#*', 'USERS'], ...(name === 'Delete' ? ['GC#*'] : [])].sort());
        if (name === 'Delete') assert.deepEqual(statements.find((st: any) => JSON.stringify(leading(st)) === '["GC#*"]').Action, ['dynamodb:PutItem']);
      }
      if (name === 'Purge') assert.deepEqual(statements.flatMap((st: any) => [st.Action].flat()).sort(), ['dynamodb:DeleteItem', 'dynamodb:Query', 'dynamodb:UpdateItem', 'logs:CreateLogStream', 'logs:PutLogEvents', 's3:AbortMultipartUpload', 's3:DeleteObject', 's3:ListBucket']);
      if (name === 'Gc') {
        // Marks, marked repositories and digests through the digest index; the orphan sweep's
        // suspects (BatchWriteItem) and the key index, never a Scan.
        assert.deepEqual(statements.flatMap((st: any) => [st.Action].flat()).sort(), [
          'dynamodb:BatchGetItem', 'dynamodb:BatchWriteItem', 'dynamodb:DeleteItem', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query', 'dynamodb:Query', 'dynamodb:Query', 'dynamodb:UpdateItem',
          'logs:CreateLogStream', 'logs:PutLogEvents',
          's3:AbortMultipartUpload', 's3:DeleteObject', 's3:GetObject', 's3:ListBucket', 's3:ListBucketMultipartUploads',
        ]);
        assert.ok(statements.some((st: any) => JSON.stringify(st.Resource) === '{"Fn::Sub":"${MetadataTable.Arn}/index/digest"}' && JSON.stringify(st.Action) === '["dynamodb:Query"]'), 'the digest index');
        assert.ok(statements.some((st: any) => JSON.stringify(st.Resource) === '{"Fn::Sub":"${MetadataTable.Arn}/index/key"}' && JSON.stringify(st.Action) === '["dynamodb:Query"]'), 'the key index');
      }
      // A role that reads objects may list the bucket without a prefix condition: S3 answers a
      // read of a missing key 404 only to such a caller (403 to others), and the code tells a
      // missing object by its 404.
      if (statements.some((st: any) => [st.Action].flat().includes('s3:GetObject'))) {
        assert.ok(
          statements.some((st: any) => [st.Action].flat().includes('s3:ListBucket') && JSON.stringify(st.Resource) === '{"Fn::GetAtt":["BlobBucket","Arn"]}' && !st.Condition),
          `${name}: reads objects, so lists the bucket unconditioned (a missing key is a 404, not a 403)`,
        );
      }
      // Reads write nothing else.
      if (name === 'Read') assert.deepEqual(statements.filter((st: any) => !st.Condition).flatMap(writes), []);
      if (name === 'Delete') assert.ok(!statements.flatMap((st: any) => [st.Action].flat()).includes('s3:PutObject'));
    }
    // The framework's shared execution role is not used.
    assert.equal(resources.IamRoleLambdaExecution, undefined);
  });

  it('protects and tidies the bucket: no public access, encryption, lifecycle for abandoned uploads', () => {
    const bucket = resources.BlobBucket!;
    assert.equal((bucket as any).DeletionPolicy, 'Retain');
    const p = bucket.Properties;
    assert.deepEqual(p.PublicAccessBlockConfiguration, { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true });
    assert.equal(p.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault.SSEAlgorithm, 'AES256');
    const rules = p.LifecycleConfiguration.Rules;
    assert.ok(rules.some((r: any) => r.Status === 'Enabled' && r.AbortIncompleteMultipartUpload?.DaysAfterInitiation > 0));
    assert.ok(rules.some((r: any) => r.Status === 'Enabled' && r.Prefix === 'uploads/' && r.ExpirationInDays > 0));
  });

  it('defines the table once: the key schema of infra/dynamodb-table.json, with TTL and point-in-time recovery', async () => {
    const table = resources.MetadataTable!;
    assert.equal((table as any).DeletionPolicy, 'Retain');
    const p = table.Properties;
    const definition = JSON.parse(await readFile(join(root, 'infra/dynamodb-table.json'), 'utf8'));
    assert.deepEqual(p.KeySchema, definition.KeySchema);
    assert.deepEqual(p.AttributeDefinitions, definition.AttributeDefinitions);
    assert.deepEqual(p.GlobalSecondaryIndexes, definition.GlobalSecondaryIndexes);
    assert.equal(p.BillingMode, 'PAY_PER_REQUEST');
    assert.deepEqual(p.TimeToLiveSpecification, { AttributeName: 'ttl', Enabled: true });
    assert.deepEqual(p.PointInTimeRecoverySpecification, { PointInTimeRecoveryEnabled: true });
    assert.equal(p.TableName, 'skiff-ci');
    assert.ok(template.Outputs.RegistryUrl, 'the stack outputs the registry URL');
  });

  it('runs garbage collection daily by default, with the grace period (gcGraceSeconds) as its input', () => {
    const rules = ofType('AWS::Events::Rule').map(([, r]) => r.Properties).filter((p) => JSON.stringify(p.Targets).includes('GcLambdaFunction'));
    assert.equal(rules.length, 1);
    assert.equal(rules[0].ScheduleExpression, 'rate(1 day)');
    assert.deepEqual(JSON.parse(rules[0].Targets[0].Input), { graceSeconds: 86400 });
  });

  it('does not retry a failed garbage collection run: the next scheduled run resumes (retention and GC keep cursors)', () => {
    const configs = ofType('AWS::Lambda::EventInvokeConfig').map(([, r]) => r.Properties).filter((p) => JSON.stringify(p.FunctionName).includes('GcLambdaFunction'));
    assert.equal(configs.length, 1, 'an invoke config for the gc function');
    assert.equal(configs[0].MaximumRetryAttempts, 0);
  });

  it('keeps every function bundle within the budget, and a fresh Node process can load it and answer an event', async (t) => {
    const unpacked = await mkdtemp(join(tmpdir(), 'skiff-bundle-'));
    try {
      for (const name of Object.keys(FUNCTIONS)) {
        if (name === 'Purge' || name === 'Gc') continue;
        const zip = join(out, `${name.toLowerCase()}.zip`);
        const dir = join(unpacked, name);
        await run('unzip', ['-q', zip, '-d', dir]);
        const { stdout } = await run('unzip', ['-l', zip]);
        const js = stdout
          .split('\n')
          .filter((l) => /\.mjs$/.test(l.trim()))
          .reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
        t.diagnostic(`${name}: ${(js / 1024).toFixed(0)} KiB of JavaScript, zip ${((await stat(zip)).size / 1024).toFixed(0)} KiB`);
        assert.ok(js <= BUNDLE_BUDGET, `${name} bundle is ${js} bytes`);
      }
      const script = `const { http: handler } = await import(${JSON.stringify(join(unpacked, 'Read', 'functions', 'handlers.mjs'))});
        const res = await handler({ version: '2.0', rawPath: '/v2/', rawQueryString: '', headers: {}, requestContext: { http: { method: 'GET', path: '/v2/' } }, isBase64Encoded: false }, { awsRequestId: 'req-1', functionName: 'skiff-ci-read' });
        process.stderr.write('RESULT ' + JSON.stringify(res) + '\\n');`;
      const env = { PATH: process.env.PATH!, SKIFF_STORAGE: 's3', S3_BUCKET: 'b', DYNAMODB_TABLE: 't', AWS_REGION: 'eu-west-1', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', SKIFF_HASH_THREAD: 'false', NODE_NO_WARNINGS: '1' };
      const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script], { env });
      const res = JSON.parse(/RESULT (.*)/.exec(stderr)![1]!);
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['Docker-Distribution-API-Version'], 'registry/2.0');
      // Everything the handler prints is structured: a JSON log line with the request id, and
      // an EMF document CloudWatch turns into metrics. Nothing else.
      const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
      const log = lines.find((l) => l.message === 'request');
      assert.ok(log, stdout);
      assert.equal(log.function_request_id, 'req-1');
      assert.equal(log.status, 200);
      assert.equal(log.route, 'base');
      const emf = lines.find((l) => l._aws);
      assert.ok(emf, 'an EMF metrics document');
      assert.equal(emf._aws.CloudWatchMetrics[0].Namespace, 'Skiff');
      assert.equal(emf.Requests, 1);
      assert.equal(lines.length, 2, stdout);
    } finally {
      await rm(unpacked, { recursive: true, force: true });
    }
  });
});

/** What a pushed upload host image is deployed as: its repository and digest. */
const UPLOAD_IMAGE = `123456789012.dkr.ecr.eu-west-1.amazonaws.com/skiff-ci-upload-host@sha256:${'ab'.repeat(32)}`;
const ORIGIN = { 'Fn::Sub': 'https://${UploadHostService.Endpoint}' };

const lambdaEnvironments = (resources: Record<string, Resource>) =>
  Object.entries(resources)
    .filter(([, r]) => r.Type === 'AWS::Lambda::Function')
    .map(([name, r]) => [name, r.Properties.Environment.Variables] as const);
const upstreamTypes = (resources: Record<string, Resource>) => Object.values(resources).map((r) => r.Type).filter((t) => /^AWS::(ECS|ECR)::/.test(t));
const statementsOf = (role: Resource) => role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement);
/** The role is assumed by `service` only, and its statements, all inline. */
function inlineRoleOf(role: Resource, service: string): any[] {
  assert.deepEqual(role.Properties.AssumeRolePolicyDocument.Statement.map((st: any) => st.Principal), [{ Service: [service] }]);
  assert.equal(role.Properties.ManagedPolicyArns, undefined);
  return statementsOf(role);
}

describe('the upload host in the stack (osls package, offline)', () => {
  const packaged: Awaited<ReturnType<typeof packageStack>>[] = [];
  after(() => Promise.all(packaged.map((p) => rm(p.scratch, { recursive: true, force: true }))));
  const pack = async (params: Record<string, string>) => {
    const p = await packageStack(params);
    packaged.push(p);
    return p.template;
  };

  it('is not there by default: no ECS or ECR resources, no SKIFF_UPLOAD_ORIGIN, uploads stay on API Gateway', async () => {
    const { Resources, Outputs } = await pack({});
    assert.deepEqual(upstreamTypes(Resources), []);
    assert.deepEqual(Object.keys(Resources).filter((n) => n.startsWith('UploadHost')), []);
    assert.deepEqual(Object.keys(Outputs).filter((n) => n.startsWith('UploadHost')), []);
    for (const [name, env] of lambdaEnvironments(Resources)) assert.equal(env.SKIFF_UPLOAD_ORIGIN, undefined, name);
  });

  it('with uploadRepository=true, creates only the ECR repository the image is pushed to: retained, scanned on push, with a lifecycle', async () => {
    const { Resources, Outputs } = await pack({ uploadRepository: 'true' });
    assert.deepEqual(upstreamTypes(Resources), ['AWS::ECR::Repository']);
    const repo = Resources.UploadHostRepository!;
    assert.equal(repo.DeletionPolicy, 'Retain');
    assert.equal(repo.UpdateReplacePolicy, 'Retain');
    assert.equal(repo.Properties.RepositoryName, 'skiff-ci-upload-host');
    assert.equal(repo.Properties.ImageScanningConfiguration.ScanOnPush, true);
    const lifecycle = JSON.parse(repo.Properties.LifecyclePolicy.LifecyclePolicyText);
    assert.ok(lifecycle.rules.length > 0 && lifecycle.rules.every((r: any) => r.action.type === 'expire'));
    assert.deepEqual(Outputs.UploadHostRepositoryUri.Value, { 'Fn::GetAtt': ['UploadHostRepository', 'RepositoryUri'] });
    for (const [name, env] of lambdaEnvironments(Resources)) assert.equal(env.SKIFF_UPLOAD_ORIGIN, undefined, name);
  });

  it('refuses an image named by tag: only a digest says which image runs', async () => {
    await assert.rejects(packageStack({ uploadImage: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/skiff-ci-upload-host:latest' }), /uploadImage must be <repository>@sha256:<digest>/);
  });

  describe('with uploadImage set', () => {
    let resources: Record<string, Resource>;
    let outputs: Record<string, any>;
    before(async () => ({ Resources: resources, Outputs: outputs } = await pack({ uploadImage: UPLOAD_IMAGE })));

    it('runs the image as an ECS Express Mode service: Fargate, 0.25 vCPU / 0.5 GB, port 8080, /healthz, at least one task', () => {
      assert.deepEqual(upstreamTypes(resources).sort(), ['AWS::ECR::Repository', 'AWS::ECS::Cluster', 'AWS::ECS::ExpressGatewayService']);
      const p = resources.UploadHostService!.Properties;
      assert.equal(p.PrimaryContainer.Image, UPLOAD_IMAGE);
      assert.equal(p.PrimaryContainer.ContainerPort, 8080);
      assert.equal(p.HealthCheckPath, '/healthz');
      assert.equal(p.Cpu, '256');
      assert.equal(p.Memory, '512');
      assert.equal(p.ScalingTarget.MinTaskCount, 1);
      assert.ok(p.ScalingTarget.MaxTaskCount >= 1);
      assert.deepEqual(p.Cluster, { Ref: 'UploadHostCluster' });
      for (const role of ['InfrastructureRoleArn', 'ExecutionRoleArn', 'TaskRoleArn']) assert.equal(p[role]['Fn::GetAtt'][1], 'Arn', role);
      assert.deepEqual(p.PrimaryContainer.AwsLogsConfiguration.LogGroup, { Ref: 'UploadHostLogGroup' });
      assert.ok(resources.UploadHostLogGroup!.Properties.RetentionInDays > 0);
    });

    it("serves only uploads, on 0.0.0.0:8080, with the functions' bucket, table, authentication and token keys", () => {
      const env = Object.fromEntries(resources.UploadHostService!.Properties.PrimaryContainer.Environment.map((v: any) => [v.Name, v.Value]));
      assert.equal(env.SKIFF_SERVE, 'uploads');
      assert.equal(env.SKIFF_PORT, '8080');
      assert.equal(env.SKIFF_HOST, '0.0.0.0');
      // Bodies in flight bounded by the task's memory (0.5 GB, about 40 MiB a stream).
      assert.equal(env.SKIFF_MAX_STREAMS, '8');
      // Without an endpoint `npm start` would start an embedded DynamoDB Local.
      assert.deepEqual(env.DYNAMODB_ENDPOINT, { 'Fn::Sub': 'https://dynamodb.${AWS::Region}.${AWS::URLSuffix}' });
      const fn = resources.ReadLambdaFunction!.Properties.Environment.Variables;
      for (const name of ['SKIFF_STORAGE', 'S3_BUCKET', 'DYNAMODB_TABLE', 'SKIFF_AUTH', 'SKIFF_TOKEN_KEYS_PARAMETER', 'SKIFF_UPLOAD_TTL_SECONDS', 'SKIFF_DELETE_ENABLED']) {
        assert.deepEqual(env[name], fn[name], name);
      }
      for (const v of Object.values(env)) assert.ok(typeof v === 'string' || typeof v === 'object', `environment values are strings: ${v}`);
      // Streaming bodies: no Lambda chunk limit, hashing on a worker thread; no key material.
      assert.equal(env.SKIFF_MAX_CHUNK_BYTES, undefined);
      assert.equal(env.SKIFF_HASH_THREAD, undefined);
      assert.equal(env.SKIFF_TOKEN_KEYS, undefined);
    });

    it("hands every function the service's HTTPS endpoint as SKIFF_UPLOAD_ORIGIN", () => {
      const envs = lambdaEnvironments(resources);
      assert.equal(envs.length, Object.keys(FUNCTIONS).length);
      for (const [name, env] of envs) assert.deepEqual(env.SKIFF_UPLOAD_ORIGIN, ORIGIN, name);
      assert.deepEqual(outputs.UploadHostUrl.Value, ORIGIN);
    });

    it('gives the task least privilege: upload-session actions on the bucket, the table (upload, blob and link items only) and the token keys', () => {
      for (const st of inlineRoleOf(resources.UploadHostTaskRole!, 'ecs-tasks.amazonaws.com')) {
        const actions = [st.Action].flat() as string[];
        assert.ok(actions.every((a) => /^(s3|dynamodb|ssm):[A-Za-z]+$/.test(a)), `${actions}`);
        for (const res of [st.Resource].flat()) {
          const text = JSON.stringify(res);
          assert.ok(/BlobBucket\.Arn|"BlobBucket","Arn"|"MetadataTable","Arn"|:parameter\/skiff\/ci\/token-keys/.test(text), text);
        }
        // Item actions: never users, grants, failed-login counters or the catalog; never a Scan.
        if (actions.some((a) => a.startsWith('dynamodb:'))) {
          assert.deepEqual(st.Condition['ForAllValues:StringLike']['dynamodb:LeadingKeys'], ['UPLOAD#*', 'BLOB#*', 'REPO#*', 'GC#*']);
          assert.ok(!actions.includes('dynamodb:Scan') && !actions.includes('dynamodb:BatchWriteItem'));
        }
      }
    });

    it('lets ECS pull only its repository and write only its log group; Express Mode manages the load balancer with its own service-role policy', () => {
      for (const st of inlineRoleOf(resources.UploadHostExecutionRole!, 'ecs-tasks.amazonaws.com')) {
        const actions = [st.Action].flat() as string[];
        // ecr:GetAuthorizationToken has no resource-level permissions: it alone may name `*`.
        if (st.Resource === '*') assert.deepEqual(actions, ['ecr:GetAuthorizationToken']);
        else if (actions.some((a) => a.startsWith('ecr:'))) assert.deepEqual(st.Resource, { 'Fn::GetAtt': ['UploadHostRepository', 'Arn'] });
        else assert.deepEqual([actions, st.Resource], [['logs:CreateLogStream', 'logs:PutLogEvents'], { 'Fn::GetAtt': ['UploadHostLogGroup', 'Arn'] }]);
      }
      const infra = resources.UploadHostInfrastructureRole!;
      assert.deepEqual(infra.Properties.AssumeRolePolicyDocument.Statement[0].Principal, { Service: ['ecs.amazonaws.com'] });
      assert.deepEqual(infra.Properties.ManagedPolicyArns, [{ 'Fn::Sub': 'arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSInfrastructureRoleforExpressGatewayServices' }]);
      assert.equal(infra.Properties.Policies, undefined);
      // No other managed policy anywhere in the stack (AdministratorAccess, PowerUserAccess, ...).
      const managed = Object.entries(resources).filter(([, r]) => r.Type === 'AWS::IAM::Role' && r.Properties.ManagedPolicyArns).map(([n]) => n);
      assert.deepEqual(managed, ['UploadHostInfrastructureRole']);
    });
  });
});
